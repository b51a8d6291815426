/**
 * The edge benchmark (`npm run bench:edge`): in one run, on one machine,
 *
 *   (1) catalog GetProduct over direct gRPC (h2load, gRPC frame body, h2c),
 *   (2) GET /v1/products/{id} through the local TypeScript edge (h2load --h1: the edge
 *       is node:http, HTTP/1.1 only), which transcodes to the same GetProduct,
 *
 * h2load on one core, catalog and edge in their own child processes both pinned to the
 * other core, so (1) and (2) get the same single core of serving capacity and the ratio
 * (2)/(1) is the edge's cost per request. Warm-up, then alternating rounds. Prints req/s,
 * p50, p99, the ratio (target >= 0.5) and the edge's p99 overhead; writes
 * bench/results/edge-<timestamp>.json. See bench/edge/README.md.
 */
import { spawnSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { availableParallelism, cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { killAllServers, type ServerChild, serverMode, startServer } from "../catalog/children.js";
import { type H2loadResult, percentiles, runH2load } from "../catalog/h2load.js";
import { cpusAllowed, MachineMonitor, machineBusy, Sampler } from "../catalog/proc.js";
import { intEnv } from "../lib/env.js";
import { printProblems, printWarnings, writeResults } from "../lib/report.js";
import { runBenchmark } from "../lib/run-benchmark.js";
import {
  GET_PRODUCT_PATH,
  getProductBody,
  ROOT,
  rpcCodeDeltas,
  scrape,
  startCatalogChild,
} from "./common.js";

const GOAL_RATIO = 0.5;
const NOISE_CORES = 0.1;
const connections = intEnv("BENCH_CONNECTIONS", 8);
const streams = intEnv("BENCH_STREAMS", 8);
const settings = {
  durationSeconds: intEnv("BENCH_DURATION", 15),
  rounds: intEnv("BENCH_ROUNDS", 3),
  warmupSeconds: intEnv("BENCH_WARMUP", 5),
  connections,
  streams,
  /** HTTP/1.1 connections to the edge, one request in flight each: the same 64 in flight. */
  h1Connections: intEnv("BENCH_H1_CONNECTIONS", connections * streams),
  loadCpu: process.env.BENCH_LOAD_CPU ?? "0",
  catalogCpu: process.env.BENCH_SERVER_CPU ?? "1",
  edgeCpu: process.env.BENCH_EDGE_CPU ?? process.env.BENCH_SERVER_CPU ?? "1",
};
const roundSeconds = Math.max(1, Math.round(settings.durationSeconds / settings.rounds));
const say = (line = ""): void => {
  process.stdout.write(`${line}\n`);
};
const problems: string[] = [];
const warnings: string[] = [];
const cleanups: (() => Promise<unknown>)[] = [];

type Id = "grpc" | "edge";
const LABELS: Record<Id, string> = {
  grpc: "(1) GetProduct direct gRPC (h2)",
  edge: "(2) GET /v1/products/{id} via edge (h1)",
};

interface Run {
  h2: H2loadResult;
  catalogCpuSeconds: number;
  edgeCpuSeconds: number;
  wallSeconds: number;
  othersCores: number;
  dependencyCores: number;
  busyPerCpu: Record<string, number>;
  codes: Record<string, number>;
}

async function main(): Promise<void> {
  for (const tool of ["h2load", "taskset"]) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" }).status !== 0) {
      throw new Error(`${tool} is not installed`);
    }
  }
  const started = new Date();
  const work = await mkdtemp(join(tmpdir(), "meshmart-bench-edge-"));
  cleanups.push(() => rm(work, { recursive: true, force: true }));
  say(`meshmart edge benchmark: ${started.toISOString()}`);
  say(`node ${process.version}, ${cpus()[0]?.model ?? "?"} x${availableParallelism()}`);
  say(
    `servers: ${serverMode() === "compiled" ? "compiled, as the images run" : "from source under tsx (BENCH_SOURCE=1)"}`,
  );
  say(
    `h2load on cpu ${settings.loadCpu}; catalog on cpu ${settings.catalogCpu}, edge on cpu ${settings.edgeCpu}; ` +
      `gRPC -c ${settings.connections} -m ${settings.streams}; edge --h1 -c ${settings.h1Connections} -m 1; ` +
      `warm-up ${settings.warmupSeconds} s, then ${settings.rounds} rounds x ${roundSeconds} s per target`,
  );
  const busy = await machineBusy(1000);
  say(`machine busy before the run: ${(busy * 100).toFixed(0)}% of ${availableParallelism()} cpus`);
  if (busy > 0.1) warnings.push(`before the run the machine was ${(busy * 100).toFixed(0)}% busy`);

  // Postgres/Redis (if started here) must not inherit our pinning: infrastructure first.
  const catalog = await startCatalogChild(settings.catalogCpu);
  cleanups.push(() => catalog.db.drop());
  spawnSync("taskset", ["-a", "-p", "-c", settings.loadCpu, String(process.pid)], {
    stdio: "ignore",
  });
  const edge = await startServer({
    name: "edge",
    entry: join(ROOT, "bench", "edge", "servers", "edge.ts"),
    cwd: ROOT,
    cpu: settings.edgeCpu,
    env: { BENCH_CATALOG_GRPC: catalog.grpcTarget },
    // BENCH_EDGE_CPU_PROF=1: the edge runs under --cpu-prof (figures then are not comparable).
    ...(process.env.BENCH_EDGE_CPU_PROF === "1"
      ? {
          nodeFlags: [
            "--cpu-prof",
            `--cpu-prof-dir=${join(ROOT, "bench", "results", "profiles-edge")}`,
          ],
        }
      : {}),
  });
  const edgeUrl = `http://127.0.0.1:${edge.ready.http}`;
  const restPath = `/v1/products/${encodeURIComponent(catalog.productId)}`;
  const check = await fetch(`${edgeUrl}${restPath}`);
  const checkBody = (await check.json()) as { product?: { id?: string }; id?: string };
  if (check.status !== 200 || (checkBody.product?.id ?? checkBody.id) !== catalog.productId) {
    throw new Error(`edge verification: HTTP ${check.status} ${JSON.stringify(checkBody)}`);
  }
  const grpcBody = join(work, "get-product.grpc");
  await writeFile(grpcBody, getProductBody(catalog.productId));

  const runOnce = async (id: Id, seconds: number, logFile?: string): Promise<Run> => {
    const before = await scrape(catalog.adminUrl);
    const cat = new Sampler(catalog.server.pid);
    const edg = new Sampler(edge.pid);
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
            url: `${edgeUrl}${restPath}`,
            headers: [],
            h1: true,
            connections: settings.h1Connections,
            streams: 1,
          });
    const c = cat.stop();
    const e = edg.stop();
    const load = machine.stop(c.cpuSeconds + e.cpuSeconds + (h2.cpuSeconds ?? 0));
    const after = await scrape(catalog.adminUrl);
    return {
      h2,
      catalogCpuSeconds: c.cpuSeconds,
      edgeCpuSeconds: e.cpuSeconds,
      wallSeconds: c.wallSeconds,
      othersCores: load.othersCores,
      dependencyCores: load.dependencyCores,
      busyPerCpu: load.busyPerCpu,
      codes: rpcCodeDeltas(before, after, "GetProduct"),
    };
  };

  const ids: Id[] = ["grpc", "edge"];
  const warm = new Map<Id, Run>();
  for (const id of ids) {
    process.stdout.write(`${LABELS[id]}: warm-up ${settings.warmupSeconds} s… `);
    const run = await runOnce(id, settings.warmupSeconds);
    warm.set(id, run);
    say(`${Math.round(run.h2.reqPerSec)} req/s`);
  }
  const rounds = new Map<Id, Run[]>(ids.map((id) => [id, []]));
  for (let round = 1; round <= settings.rounds; round++) {
    const line: string[] = [];
    for (const id of ids) {
      const run = await runOnce(id, roundSeconds, join(work, `${id}-${round}.log`));
      rounds.get(id)?.push(run);
      line.push(`${id} ${Math.round(run.h2.reqPerSec)}`);
    }
    say(`round ${round}/${settings.rounds}: ${line.join(", ")} req/s`);
  }
  const allowed = { catalog: cpusAllowed(catalog.server.pid), edge: cpusAllowed(edge.pid) };
  if (allowed.catalog !== settings.catalogCpu)
    problems.push(`catalog allowed on cpus ${allowed.catalog}`);
  if (allowed.edge !== settings.edgeCpu) problems.push(`edge allowed on cpus ${allowed.edge}`);

  const results = Object.fromEntries(
    ids.map((id) => [id, aggregate(id, warm.get(id) as Run, rounds.get(id) ?? [])]),
  ) as Record<Id, ReturnType<typeof aggregate>>;
  const stopped: Record<string, unknown> = {};
  for (const s of [edge, catalog.server] as ServerChild[]) stopped[s.name] = await s.stop();

  const ratio = results.edge.reqPerSec / results.grpc.reqPerSec;
  const cpuRatio = results.grpc.cpuUsPerRequest / results.edge.cpuUsPerRequest;
  const p99OverheadMs = results.edge.p99Ms - results.grpc.p99Ms;
  const p50OverheadMs = results.edge.p50Ms - results.grpc.p50Ms;
  const errors = results.grpc.errors + results.edge.errors;
  const invalid = errors > 0 || problems.length > 0;

  const f = (v: number, d = 2) => (Number.isFinite(v) ? v.toFixed(d) : "-");
  const pct = (v: number | undefined) => (v === undefined ? "-" : `${Math.round(v * 100)}%`);
  say();
  say(
    `${"target".padEnd(42)}${["req/s", "spread", "p50 ms", "p99 ms", "cat CPU", "edge CPU", "µs/req", "h2load", "redis+pg", "others", "errors"].map((h) => h.padStart(9)).join("")}`,
  );
  for (const id of ids) {
    const r = results[id];
    say(
      LABELS[id].padEnd(42) +
        [
          String(Math.round(r.reqPerSec)),
          `±${Math.round(r.spread * 50)}%`,
          f(r.p50Ms),
          f(r.p99Ms),
          pct(r.catalogCpu),
          pct(r.edgeCpu),
          String(Math.round(r.cpuUsPerRequest)),
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
  const verdict = `${ratio >= GOAL_RATIO ? "PASS" : "FAIL"}${invalid ? " (INVALID: run had errors)" : ""}`;
  say(`  ratio (2)/(1) req/s          ${f(ratio)}   target >= ${GOAL_RATIO}  ${verdict}`);
  say(
    `  ratio on server CPU µs/req   ${f(cpuRatio)}   (noise-robust cross-check: (1) µs ÷ (2) µs)`,
  );
  say(
    `  edge p99 overhead ms         ${f(p99OverheadMs)}   (p99(2) - p99(1), both at ${settings.connections * settings.streams} vs ${settings.h1Connections} in flight; p50: ${f(p50OverheadMs)})`,
  );
  say(
    `  edge µs/req ${Math.round(results.edge.edgeCpuUsPerRequest)}, catalog µs/req direct ${Math.round(results.grpc.catalogCpuUsPerRequest)} / behind edge ${Math.round(results.edge.catalogCpuUsPerRequest)}`,
  );
  if (invalid) {
    printProblems(say, "ERRORS DURING THE RUN: the figures above are NOT valid", [
      ...ids.flatMap((id) => results[id].errorDetail.map((d) => `${LABELS[id]}: ${d}`)),
      ...problems,
    ]);
  }
  printWarnings(say, warnings);
  const resultsFile = await writeResults("edge", started, {
    settings: { ...settings, roundSeconds, serverMode: serverMode() },
    machineBusyBefore: busy,
    results,
    ratio,
    cpuRatio,
    goal: { ratio: GOAL_RATIO, pass: ratio >= GOAL_RATIO, valid: !invalid },
    p99OverheadMs,
    p50OverheadMs,
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
    const bad =
      h.failed +
      h.errored +
      h.timeout +
      h.status["3xx"] +
      h.status["4xx"] +
      h.status["5xx"] +
      (h.logNon200 ?? 0);
    if (bad > 0) {
      errors += bad;
      errorDetail.push(
        `${phase}: h2load ${h.failed} failed, ${h.errored} errored, ${h.timeout} timeout, ${h.status["4xx"]} 4xx, ${h.status["5xx"]} 5xx, ${h.logNon200 ?? 0} non-200 logged`,
      );
    }
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
    if (phase !== "warm-up" && run.othersCores > NOISE_CORES) {
      warnings.push(`${id} ${phase}: other processes used ${run.othersCores.toFixed(2)} cores`);
    }
  }
  const catalogCpu = sum((r) => r.catalogCpuSeconds);
  const edgeCpu = sum((r) => r.edgeCpuSeconds);
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
    edgeCpu: edgeCpu / wall,
    /** Serving CPU (catalog + edge) per request, µs. */
    cpuUsPerRequest: ((catalogCpu + (id === "edge" ? edgeCpu : 0)) * 1e6) / n,
    catalogCpuUsPerRequest: (catalogCpu * 1e6) / n,
    edgeCpuUsPerRequest: (edgeCpu * 1e6) / n,
    loadCpu: measured.every((r) => r.h2.cpuSeconds !== undefined)
      ? sum((r) => r.h2.cpuSeconds ?? 0) / wall
      : undefined,
    dependencyCores: sum((r) => r.dependencyCores * r.wallSeconds) / wall,
    othersCores: Math.max(...measured.map((r) => r.othersCores)),
    busyPerCpu: measured.map((r) => r.busyPerCpu),
    codes: measured.map((r) => r.codes),
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
