/**
 * The edge benchmark (`npm run bench:edge`): in one run, on one machine,
 *
 *   (1) catalog GetProduct over direct gRPC (h2load, gRPC frame body, h2c),
 *   (2) GET /v1/products/{id} through real Envoy over HTTP/1.1 (h2load --h1),
 *   (3) the same GET through Envoy over h2c,
 *
 * where Envoy runs the production generator's config (loopback upstreams; only the
 * per-client rate-limit buckets raised, since all the load comes from one IP) with
 * `--concurrency 1`, and transcodes to the same GetProduct on the same catalog. h2load on
 * one core; catalog and Envoy both pinned to the other, so every target gets the same single
 * core of serving capacity. Warm-up, then alternating rounds. Prints req/s, p50/p99, CPU
 * µs per request of catalog and of Envoy, and the two targets: (2)/(1) req/s >= 0.75 and
 * Envoy µs/req <= 1/3 of catalog's; writes bench/results/edge-<timestamp>.json.
 * See bench/edge/README.md.
 */
import { spawnSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { availableParallelism, cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { ENVOY_VERSION, toolPath } from "../../scripts/lib/tools.js";
import { killAllServers, serverMode } from "../catalog/children.js";
import { type H2loadResult, h2loadFailures, percentiles, runH2load } from "../catalog/h2load.js";
import {
  checkMachineQuiet,
  cpusAllowed,
  MachineMonitor,
  pinSelf,
  Sampler,
} from "../catalog/proc.js";
import { intEnv } from "../lib/env.js";
import { printProblems, printWarnings, writeResults } from "../lib/report.js";
import { alternateRounds } from "../lib/rounds.js";
import { runBenchmark } from "../lib/run-benchmark.js";
import {
  GET_PRODUCT_PATH,
  getProductBody,
  rpcCodeDeltas,
  scrape,
  startCatalogChild,
} from "./common.js";
import {
  type AccessLogSink,
  BENCH_BUCKET_TOKENS,
  type BenchEnvoy,
  countLines,
  startBenchEnvoy,
  sumStats,
  threadsCpusAllowed,
} from "./envoy.js";

/** REST through Envoy must keep this share of direct gRPC's req/s. */
const GOAL_RATIO = 0.75;
/** Envoy's CPU per request must be at most this share of catalog's. */
const GOAL_ENVOY_CPU_SHARE = 1 / 3;
const NOISE_CORES = 0.1;
const connections = intEnv("BENCH_CONNECTIONS", 8);
const streams = intEnv("BENCH_STREAMS", 8);
const accessLog: AccessLogSink =
  process.env.BENCH_EDGE_ACCESS_LOG === "discard" ? "discard" : "file";
const settings = {
  durationSeconds: intEnv("BENCH_DURATION", 15),
  rounds: intEnv("BENCH_ROUNDS", 3),
  warmupSeconds: intEnv("BENCH_WARMUP", 5),
  connections,
  streams,
  /** HTTP/1.1 connections to Envoy, one request in flight each: the same 64 in flight. */
  h1Connections: intEnv("BENCH_H1_CONNECTIONS", connections * streams),
  loadCpu: process.env.BENCH_LOAD_CPU ?? "0",
  catalogCpu: process.env.BENCH_SERVER_CPU ?? "1",
  envoyCpu: process.env.BENCH_EDGE_CPU ?? process.env.BENCH_SERVER_CPU ?? "1",
  /** A cost breakdown: HTTP filters to leave out of Envoy's config ("lua,jwt_authn"). */
  dropFilters: (process.env.BENCH_EDGE_DROP_FILTERS ?? "")
    .split(",")
    .map((f) => f.trim())
    .filter((f) => f !== ""),
  accessLog,
};
const roundSeconds = Math.max(1, Math.round(settings.durationSeconds / settings.rounds));
const say = (line = ""): void => {
  process.stdout.write(`${line}\n`);
};
const problems: string[] = [];
const warnings: string[] = [];
const cleanups: (() => Promise<unknown>)[] = [];
let jwksFetchFailures = 0;

type Id = "grpc" | "h1" | "h2c";
const LABELS: Record<Id, string> = {
  grpc: "(1) GetProduct direct gRPC (h2)",
  h1: "(2) GET /v1/products/{id} Envoy (h1)",
  h2c: "(3) GET /v1/products/{id} Envoy (h2c)",
};
const ALL_IDS: readonly Id[] = ["grpc", "h1", "h2c"];

/** BENCH_ONLY: a subset of the targets; (1) always runs, every ratio is against it. */
function selectedIds(): Id[] {
  const raw = process.env.BENCH_ONLY;
  if (raw === undefined || raw === "") return [...ALL_IDS];
  const wanted = new Set(raw.split(",").map((s) => s.trim()));
  for (const w of wanted) {
    if (!ALL_IDS.includes(w as Id)) {
      console.error(`BENCH_ONLY: unknown target '${w}' (targets: ${ALL_IDS.join(", ")})`);
      process.exit(2);
    }
  }
  return ALL_IDS.filter((id) => id === "grpc" || wanted.has(id));
}

interface Run {
  h2: H2loadResult;
  catalogCpuSeconds: number;
  envoyCpuSeconds: number;
  wallSeconds: number;
  othersCores: number;
  dependencyCores: number;
  busyPerCpu: Record<string, number>;
  codes: Record<string, number>;
  /** Requests Envoy's local_ratelimit refused during the run (must stay 0). */
  rateLimited: number;
}

async function main(): Promise<void> {
  for (const tool of ["h2load", "taskset"]) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" }).status !== 0) {
      throw new Error(
        tool === "h2load"
          ? "h2load is not installed (Debian: apt-get install nghttp2-client)"
          : `${tool} is not installed`,
      );
    }
  }
  const envoyBin = toolPath("envoy");
  const ids = selectedIds();
  const started = new Date();
  const work = await mkdtemp(join(tmpdir(), "meshmart-bench-edge-"));
  cleanups.push(() => rm(work, { recursive: true, force: true }));
  say(`meshmart edge benchmark: ${started.toISOString()}`);
  say(`node ${process.version}, ${cpus()[0]?.model ?? "?"} x${availableParallelism()}`);
  say(
    `catalog: ${serverMode() === "compiled" ? "compiled, as the images run" : "from source under tsx (BENCH_SOURCE=1)"}; ` +
      `edge: Envoy ${ENVOY_VERSION} (${envoyBin}), --concurrency 1`,
  );
  say(
    `h2load on cpu ${settings.loadCpu}; catalog on cpu ${settings.catalogCpu}, Envoy on cpu ${settings.envoyCpu}; ` +
      `gRPC and h2c -c ${settings.connections} -m ${settings.streams}; h1 --h1 -c ${settings.h1Connections} -m 1; ` +
      `warm-up ${settings.warmupSeconds} s, then ${settings.rounds} rounds x ${roundSeconds} s per target`,
  );
  const busy = await checkMachineQuiet(say, warnings);

  // Postgres/Redis (if started here) must not inherit our pinning: infrastructure first.
  const catalog = await startCatalogChild(settings.catalogCpu);
  cleanups.push(() => catalog.db.drop());
  pinSelf(settings.loadCpu);
  const envoy: BenchEnvoy = await startBenchEnvoy({
    envoyBin,
    workDir: work,
    catalog: {
      grpc: catalog.server.ready.grpc,
      http: catalog.server.ready.http ?? catalog.server.ready.grpc,
    },
    cpu: settings.envoyCpu,
    accessLog: settings.accessLog,
    dropFilters: settings.dropFilters,
    onStderrLine: (line) => {
      // identity (the JWKS) is not running here; GetProduct's jwt rule requires no token, so
      // the failed background fetch changes nothing per request. Counted, not printed.
      if (line.includes("Jwks async fetching")) jwksFetchFailures++;
      else process.stderr.write(`\n[envoy] ${line}\n`);
    },
  });
  // Registered after the catalog's: cleanups run in reverse, so Envoy stops first.
  cleanups.push(() => envoy.edge.close());
  say(
    `rate limits: raised ${envoy.rewrite.buckets} per-client descriptor buckets in ${envoy.rewrite.filters} local_ratelimit configs ` +
      `(${envoy.rewrite.before.join(", ")}) to ${BENCH_BUCKET_TOKENS} burst / ${BENCH_BUCKET_TOKENS} per 1s in the benchmark's copy ` +
      `of the generated config (all the load comes from one IP); the filters stay enabled and enforced`,
  );
  say(`config: ${envoy.configFile} (validated by envoy --mode validate)`);
  if (envoy.dropped.length > 0) {
    warnings.push(
      `BENCH_EDGE_DROP_FILTERS took ${envoy.dropped.join(", ")} out of Envoy's config: a cost breakdown, not the edge users get`,
    );
    say(`filters dropped for a cost breakdown: ${envoy.dropped.join(", ")}`);
  }
  say(
    settings.accessLog === "file"
      ? `access log: on, Envoy's stdout redirected to ${envoy.accessLogPath} (a file, written by Envoy; not read during the run)`
      : "access log: on, Envoy's stdout redirected to /dev/null (BENCH_EDGE_ACCESS_LOG=discard)",
  );

  const restPath = `/v1/products/${encodeURIComponent(catalog.productId)}`;
  const check = await fetch(`${envoy.edge.url}${restPath}`);
  const checkBody = (await check.json()) as { product?: { id?: string } };
  if (check.status !== 200 || checkBody.product?.id !== catalog.productId) {
    throw new Error(`Envoy verification: HTTP ${check.status} ${JSON.stringify(checkBody)}`);
  }
  if (check.headers.get("server") !== "envoy") {
    throw new Error(`Envoy verification: server header is ${check.headers.get("server")}`);
  }
  const grpcBody = join(work, "get-product.grpc");
  await writeFile(grpcBody, getProductBody(catalog.productId));
  const rateLimitedStat = "http_local_rate_limit\\.rate_limited$";

  const runOnce = async (id: Id, seconds: number, logFile?: string): Promise<Run> => {
    const before = await scrape(catalog.adminUrl);
    const limitedBefore = await sumStats(envoy.edge.adminUrl, rateLimitedStat);
    const cat = new Sampler(catalog.server.pid);
    const env = new Sampler(envoy.pid);
    const machine = new MachineMonitor();
    const common = {
      cpu: settings.loadCpu,
      durationSeconds: seconds,
      ...(logFile === undefined ? {} : { logFile }),
    };
    const h2 =
      id === "grpc"
        ? await runH2load({
            ...common,
            url: `http://${catalog.grpcTarget}${GET_PRODUCT_PATH}`,
            bodyFile: grpcBody,
            headers: ["content-type: application/grpc", "te: trailers"],
            h1: false,
            connections: settings.connections,
            streams: settings.streams,
          })
        : await runH2load({
            ...common,
            url: `${envoy.edge.url}${restPath}`,
            headers: [],
            h1: id === "h1",
            connections: id === "h1" ? settings.h1Connections : settings.connections,
            streams: id === "h1" ? 1 : settings.streams,
          });
    const c = cat.stop();
    const e = env.stop();
    const load = machine.stop(c.cpuSeconds + e.cpuSeconds + (h2.cpuSeconds ?? 0));
    const after = await scrape(catalog.adminUrl);
    return {
      h2,
      catalogCpuSeconds: c.cpuSeconds,
      envoyCpuSeconds: e.cpuSeconds,
      wallSeconds: c.wallSeconds,
      othersCores: load.othersCores,
      dependencyCores: load.dependencyCores,
      busyPerCpu: load.busyPerCpu,
      codes: rpcCodeDeltas(before, after, "GetProduct"),
      rateLimited: (await sumStats(envoy.edge.adminUrl, rateLimitedStat)) - limitedBefore,
    };
  };

  const { warm, rounds } = await alternateRounds({
    targets: ids,
    warmupSeconds: settings.warmupSeconds,
    rounds: settings.rounds,
    roundSeconds,
    run: (id, seconds, round) =>
      round === undefined
        ? runOnce(id, seconds)
        : runOnce(id, seconds, join(work, `${id}-${round}.log`)),
    reqPerSec: (run) => run.h2.reqPerSec,
    label: (id) => LABELS[id],
    say,
  });
  const envoyThreads = threadsCpusAllowed(envoy.pid);
  const allowed = { catalog: cpusAllowed(catalog.server.pid), envoyThreads: envoyThreads.cpus };
  if (allowed.catalog !== settings.catalogCpu)
    problems.push(`catalog allowed on cpus ${allowed.catalog}`);
  if (allowed.envoyThreads.join(" ") !== settings.envoyCpu)
    problems.push(`Envoy's threads allowed on cpus ${allowed.envoyThreads.join(" / ")}`);

  const results = Object.fromEntries(
    ids.map((id) => [id, aggregate(id, warm.get(id) as Run, rounds.get(id) ?? [])]),
  ) as Partial<Record<Id, ReturnType<typeof aggregate>>> & {
    grpc: ReturnType<typeof aggregate>;
  };
  await envoy.edge.close();
  const stopped = { catalog: await catalog.server.stop() };

  // Every request Envoy answered is one access-log line; fewer means the log was not on.
  let accessLogLines: { lines: number; bytes: number } | undefined;
  if (settings.accessLog === "file") {
    accessLogLines = await countLines(envoy.accessLogPath);
    const served = ids
      .filter((id) => id !== "grpc")
      .reduce(
        (n, id) =>
          n +
          [warm.get(id), ...(rounds.get(id) ?? [])].reduce((m, r) => m + (r?.h2.succeeded ?? 0), 0),
        0,
      );
    if (accessLogLines.lines < served)
      problems.push(`access log has ${accessLogLines.lines} lines for ${served} requests served`);
  }

  const grpc = results.grpc;
  const rest = results.h1 ?? results.h2c;
  const restId: Id = results.h1 === undefined ? "h2c" : "h1";
  const ratioOf = (id: Id) => (results[id]?.reqPerSec ?? Number.NaN) / grpc.reqPerSec;
  const envoyShareOf = (id: Id) =>
    (results[id]?.envoyCpuUsPerRequest ?? Number.NaN) /
    (results[id]?.catalogCpuUsPerRequest ?? Number.NaN);
  const ratio = ratioOf(restId);
  const envoyShare = envoyShareOf(restId);
  const errors = ids.reduce((n, id) => n + (results[id]?.errors ?? 0), 0);
  const invalid = errors > 0 || problems.length > 0;

  const f = (v: number, d = 2) => (Number.isFinite(v) ? v.toFixed(d) : "-");
  const pct = (v: number | undefined) => (v === undefined ? "-" : `${Math.round(v * 100)}%`);
  say();
  say(
    `${"target".padEnd(40)}${["req/s", "spread", "p50 ms", "p99 ms", "cat CPU", "env CPU", "cat µs", "env µs", "h2load", "redis+pg", "others", "errors"].map((h) => h.padStart(9)).join("")}`,
  );
  for (const id of ids) {
    const r = results[id];
    if (r === undefined) continue;
    say(
      LABELS[id].padEnd(40) +
        [
          String(Math.round(r.reqPerSec)),
          `±${Math.round(r.spread * 50)}%`,
          f(r.p50Ms),
          f(r.p99Ms),
          pct(r.catalogCpu),
          id === "grpc" ? "-" : pct(r.envoyCpu),
          String(Math.round(r.catalogCpuUsPerRequest)),
          id === "grpc" ? "-" : String(Math.round(r.envoyCpuUsPerRequest)),
          pct(r.loadCpu),
          pct(r.dependencyCores),
          pct(r.othersCores),
          String(r.errors),
        ]
          .map((s) => s.padStart(9))
          .join(""),
    );
  }
  say();
  const mark = (pass: boolean) =>
    `${pass ? "PASS" : "FAIL"}${invalid ? " (INVALID: see below)" : ""}`;
  const n = restId === "h1" ? "(2)" : "(3)";
  if (rest !== undefined) {
    say(
      `  ratio ${n}/(1) req/s                      ${f(ratio)}   target >= ${GOAL_RATIO}  ${mark(ratio >= GOAL_RATIO)}`,
    );
    say(
      `  Envoy µs/req ÷ catalog µs/req ${n}        ${f(envoyShare)}   target <= ${f(GOAL_ENVOY_CPU_SHARE)}  ${mark(envoyShare <= GOAL_ENVOY_CPU_SHARE)}` +
        `   (${Math.round(rest.envoyCpuUsPerRequest)} ÷ ${Math.round(rest.catalogCpuUsPerRequest)}; ÷ catalog's direct ${Math.round(grpc.catalogCpuUsPerRequest)}: ${f(rest.envoyCpuUsPerRequest / grpc.catalogCpuUsPerRequest)})`,
    );
    say(
      `  ratio on server CPU µs/req ${n}           ${f(grpc.cpuUsPerRequest / rest.cpuUsPerRequest)}   (noise-robust cross-check: (1) µs ÷ ${n} catalog+Envoy µs)`,
    );
    say(
      `  Envoy p99 overhead ms ${n}                ${f(rest.p99Ms - grpc.p99Ms)}   (p99 ${n} - p99(1), at the same in-flight count; p50: ${f(rest.p50Ms - grpc.p50Ms)})`,
    );
  }
  if (restId === "h1" && results.h2c !== undefined) {
    say(
      `  (3) h2c: ratio ${f(ratioOf("h2c"))} req/s, Envoy µs/req ÷ catalog µs/req ${f(envoyShareOf("h2c"))}   (for comparison, no target)`,
    );
  }
  say(
    accessLogLines === undefined
      ? "  access log: discarded (/dev/null)"
      : `  access log: ${accessLogLines.lines} lines, ${(accessLogLines.bytes / 1e6).toFixed(1)} MB written to a file by Envoy`,
  );
  say(`  Envoy: ${envoyThreads.threads} threads, allowed on cpu ${envoyThreads.cpus.join(" / ")}`);
  say(
    `  Envoy's JWKS fetch from identity (not running; GetProduct needs no token) failed ${jwksFetchFailures} times: warnings not shown`,
  );
  if (invalid) {
    printProblems(say, "ERRORS DURING THE RUN: the figures above are NOT valid", [
      ...ids.flatMap((id) => (results[id]?.errorDetail ?? []).map((d) => `${LABELS[id]}: ${d}`)),
      ...problems,
    ]);
  }
  printWarnings(say, warnings);
  const resultsFile = await writeResults("edge", started, {
    settings: { ...settings, roundSeconds, serverMode: serverMode(), targets: ids },
    envoy: {
      version: ENVOY_VERSION,
      binary: envoyBin,
      concurrency: 1,
      threads: envoyThreads.threads,
      rateLimitRewrite: { ...envoy.rewrite, to: BENCH_BUCKET_TOKENS },
      accessLog: settings.accessLog,
      accessLogLines,
      jwksFetchFailures,
    },
    machineBusyBefore: busy,
    results,
    ratio,
    envoyCpuShare: envoyShare,
    goal: {
      ratio: GOAL_RATIO,
      ratioPass: ratio >= GOAL_RATIO,
      envoyCpuShare: GOAL_ENVOY_CPU_SHARE,
      envoyCpuSharePass: envoyShare <= GOAL_ENVOY_CPU_SHARE,
      measuredOn: restId,
      valid: !invalid,
    },
    serversCpusAllowed: allowed,
    serverExit: stopped,
    problems,
    warnings,
  });
  say(`results: ${resultsFile}`);
  if (invalid) process.exitCode = 1;
}

function aggregate(id: Id, warm: Run, measured: Run[]) {
  const sum = (f: (r: Run) => number) => measured.reduce((n, r) => n + f(r), 0);
  const succeeded = sum((r) => r.h2.succeeded);
  const wall = sum((r) => r.wallSeconds);
  const lat = percentiles(measured.map((r) => r.h2.latenciesUs ?? new Float64Array()));
  const perRound = measured.map((r) => r.h2.reqPerSec);
  const reqPerSec = succeeded / sum((r) => r.h2.finishedSeconds);
  const errorDetail: string[] = [];
  let errors = 0;
  for (const [phase, run] of [
    ["warm-up", warm] as const,
    ...measured.map((r, i) => [`round ${i + 1}`, r] as const),
  ]) {
    const h = run.h2;
    const failures = h2loadFailures(h, phase);
    errors += failures.count;
    if (failures.line !== undefined) errorDetail.push(failures.line);
    for (const [code, n] of Object.entries(run.codes)) {
      if (code !== "ok" && n > 0) {
        errors += n;
        errorDetail.push(`${phase}: catalog answered ${n} x ${code}`);
      }
    }
    // Every HTTP 200 h2load counted must be an OK GetProduct on the catalog's side.
    const ok = run.codes.ok ?? 0;
    if (ok < h.succeeded) {
      errors += h.succeeded - ok;
      errorDetail.push(`${phase}: h2load saw ${h.succeeded} successes, catalog counted ${ok} ok`);
    }
    if (run.rateLimited > 0) {
      errors += run.rateLimited;
      errorDetail.push(`${phase}: Envoy rate-limited ${run.rateLimited} requests`);
    }
    if (phase !== "warm-up" && run.othersCores > NOISE_CORES) {
      warnings.push(`${id} ${phase}: other processes used ${run.othersCores.toFixed(2)} cores`);
    }
  }
  const catalogCpu = sum((r) => r.catalogCpuSeconds);
  // Envoy idles during (1) (health checks only): its CPU there is not part of serving.
  const envoyCpu = id === "grpc" ? 0 : sum((r) => r.envoyCpuSeconds);
  const n = Math.max(1, succeeded);
  return {
    label: LABELS[id],
    reqPerSec,
    roundReqPerSec: perRound,
    spread: perRound.length > 1 ? (Math.max(...perRound) - Math.min(...perRound)) / reqPerSec : 0,
    p50Ms: lat.p50Ms,
    p90Ms: lat.p90Ms,
    p99Ms: lat.p99Ms,
    maxMs: lat.maxMs,
    requests: succeeded,
    catalogCpu: catalogCpu / wall,
    envoyCpu: envoyCpu / wall,
    /** Envoy's CPU while idle in (1), for the record. */
    envoyIdleCpu: id === "grpc" ? sum((r) => r.envoyCpuSeconds) / wall : undefined,
    /** Serving CPU (catalog + Envoy) per request, µs. */
    cpuUsPerRequest: ((catalogCpu + envoyCpu) * 1e6) / n,
    catalogCpuUsPerRequest: (catalogCpu * 1e6) / n,
    envoyCpuUsPerRequest: (envoyCpu * 1e6) / n,
    loadCpu: measured.every((r) => r.h2.cpuSeconds !== undefined)
      ? sum((r) => r.h2.cpuSeconds ?? 0) / wall
      : undefined,
    dependencyCores: sum((r) => r.dependencyCores * r.wallSeconds) / wall,
    othersCores: Math.max(...measured.map((r) => r.othersCores)),
    busyPerCpu: measured.map((r) => r.busyPerCpu),
    codes: measured.map((r) => r.codes),
    rateLimited: [warm, ...measured].reduce((m, r) => m + r.rateLimited, 0),
    errors,
    errorDetail,
    commands: [warm, ...measured].map((r) => r.h2.command),
  };
}

async function cleanup(): Promise<void> {
  killAllServers();
  for (const c of cleanups.reverse()) await c().catch(() => {});
}

await runBenchmark(main, cleanup);
