/**
 * The catalog benchmark (`npm run bench:catalog`): in one run, h2load on one core and
 * the servers, each in its own child process, on the other, measuring
 *
 *   (a) a bare @grpc/grpc-js echo server (the baseline: no kit, no I/O),
 *   (b) the same echo served through the kit with every interceptor, logs and tracing on,
 *   (c) catalog GetProduct over gRPC, served from the Redis cache,
 *   (d) catalog GetProduct over the Connect JSON port (HTTP/1.1).
 *
 * Every target gets a warm-up run, then its measured time is split into rounds that
 * alternate between the targets (a b c d a b c d …), so a slow minute of this shared VM
 * lands on all of them instead of skewing one ratio. Prints req/s, p50, p99, ratios to
 * (a) and the targets; writes everything as JSON to bench/results/catalog-<timestamp>.json.
 * See bench/README.md.
 */
import { spawnSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { availableParallelism, cpus, tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import {
  create,
  type DescMessage,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  GetProductRequestSchema,
  GetProductResponseSchema,
} from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_service_pb.js";
import {
  EchoRequestSchema,
  EchoResponseSchema,
} from "@meshmart/kit/gen/meshmart/echo/v1/echo_service_pb.js";
import {
  createTestDatabase,
  type TestDatabase,
  testNatsUrl,
  testRedisUrl,
  uniqueName,
} from "@meshmart/kit/testing";
import { benchAccessLog, intEnv } from "../lib/env.js";
import { printProblems, printWarnings, runStamp, writeResults } from "../lib/report.js";
import { runBenchmark } from "../lib/run-benchmark.js";
import { killAllServers, type ServerChild, serverMode, startServer } from "./children.js";
import { type H2loadResult, h2loadFailures, percentiles, runH2load } from "./h2load.js";
import { cpusAllowed, hwmMb, MachineMonitor, machineBusy, pinSelf, Sampler } from "./proc.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const SERVERS = join(ROOT, "bench", "catalog", "servers");
const ECHO_PATH = "/meshmart.echo.v1.EchoService/Echo";
const GET_PRODUCT_PATH = "/meshmart.catalog.v1.CatalogService/GetProduct";
const LIST_PRODUCTS_PATH = "/meshmart.catalog.v1.CatalogService/ListProducts";
const ECHO_MESSAGE = "hello from the meshmart benchmark";
const GRPC_HEADERS = ["content-type: application/grpc", "te: trailers"];
const JSON_HEADERS = ["content-type: application/json"];

const GOALS = { kitOverBare: 0.85, catalogOverBare: 0.5, catalogRssMb: 120 } as const;
/** CPU (in cores) other processes may use during a measured round before it is flagged. */
const NOISE_CORES = 0.1;

type TargetId = "a" | "b" | "c" | "d";
const IDS: readonly TargetId[] = ["a", "b", "c", "d"];
const LABELS: Record<TargetId, string> = {
  a: "(a) bare grpc-js echo",
  b: "(b) kit echo, all interceptors",
  c: "(c) catalog GetProduct gRPC, cache hit",
  d: "(d) catalog GetProduct Connect JSON h1",
};

function idsEnv(name: string, fallback: string): Set<TargetId> {
  const ids = (process.env[name] ?? fallback)
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  for (const id of ids) {
    if (!IDS.includes(id as TargetId)) {
      console.error(`${name}: unknown target '${id}' (targets: ${IDS.join(",")})`);
      process.exit(2);
    }
  }
  return new Set(ids as TargetId[]);
}

const connections = intEnv("BENCH_CONNECTIONS", 8);
const streams = intEnv("BENCH_STREAMS", 8);
const settings = {
  /** Measured seconds per target, split over the rounds. */
  durationSeconds: intEnv("BENCH_DURATION", 15),
  /** Rounds the measured time is split into, alternating targets. */
  rounds: intEnv("BENCH_ROUNDS", 3),
  /** Warm-up seconds per target, same settings as the measured runs. */
  warmupSeconds: intEnv("BENCH_WARMUP", 5),
  /** HTTP/2 connections for (a)-(c). */
  connections,
  /** Concurrent streams per HTTP/2 connection. */
  streams,
  /** HTTP/1.1 connections for (d), one request in flight each (no pipelining). */
  h1Connections: intEnv("BENCH_H1_CONNECTIONS", connections * streams),
  loadCpu: process.env.BENCH_LOAD_CPU ?? "0",
  serverCpu: process.env.BENCH_SERVER_CPU ?? "1",
  only: idsEnv("BENCH_ONLY", "a,b,c,d"),
  /** Targets whose server runs under `node --cpu-prof` (figures then are not comparable). */
  cpuProf: idsEnv("BENCH_CPU_PROF", ""),
  /** The servers' ACCESS_LOG, as servers/common.ts sets it. */
  accessLog: benchAccessLog(),
  /** Extra node flags for every server child, e.g. "--max-semi-space-size=4". */
  nodeFlags: (process.env.BENCH_NODE_FLAGS ?? "").split(/\s+/).filter((f) => f !== ""),
};
const roundSeconds = Math.max(1, Math.round(settings.durationSeconds / settings.rounds));

const say = (line = ""): void => {
  process.stdout.write(`${line}\n`);
};

/** Runs with errors or a broken setup: the figures are invalid (exit status 1). */
const problems: string[] = [];
/** A machine busy with other work: figures unreliable (reported; exit status 0). */
const warnings: string[] = [];
const cleanups: (() => Promise<unknown>)[] = [];

/** A target under load: where to send what, and how to check the server's side. */
interface Target {
  id: TargetId;
  server: ServerChild;
  url: string;
  bodyFile: string;
  h1: boolean;
  /** Admin base URL and RPC method name, for rpc_requests_total by code. */
  admin?: { url: string; method: string };
  /** Catalog: check the cache hit ratio, sample RSS. */
  catalog: boolean;
}

/** One h2load run of a target, with what was measured around it. */
interface Run {
  h2: H2loadResult;
  serverCpuSeconds: number;
  wallSeconds: number;
  peakRssMb: number;
  othersCores: number;
  stealCores: number;
  dependencyCores: number;
  busyPerCpu: Record<string, number>;
  /** Server-side outcomes during the run (b-d): code → count. */
  codes?: Record<string, number>;
  /** cache_lookups_total deltas by result (hit, miss, deleted, error). */
  cache?: Record<string, number>;
}

/** One measured target, aggregated over its rounds. */
interface TargetResult {
  id: TargetId;
  label: string;
  reqPerSec: number;
  /** req/s of each round, to show the spread. */
  roundReqPerSec: number[];
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  requests: number;
  /** HTTP 200s h2load saw over warm-up and measured rounds. */
  allSucceeded: number;
  /** Server process CPU over the measured rounds, in cores (1.0 = one core saturated). */
  serverCpu: number;
  /**
   * Server CPU time per request, in µs: the cost of one call, and much less sensitive
   * than req/s to the VM or other work slowing the server's core down.
   */
  cpuUsPerRequest: number;
  /** h2load's CPU over the measured rounds, in cores. */
  loadCpu: number | undefined;
  /** CPU other processes used during the worst round, in cores. */
  othersCores: number;
  stealCores: number;
  /** CPU Redis and Postgres used over the measured rounds, in cores (the catalog's calls). */
  dependencyCores: number;
  serverCpusAllowed: string | undefined;
  /** Non-OK outcomes over warm-up and measured rounds, from h2load and the server's side. */
  errors: number;
  errorDetail: string[];
  peakRssMb?: number;
  cacheHitRatio?: number;
  /** Cache lookups by result over the measured rounds. */
  cacheLookups?: Record<string, number>;
  /** What the server printed on exit: its counters and peak/final process.memoryUsage() in MB. */
  serverExit?: Record<string, unknown>;
  commands: string[];
}

async function main(): Promise<void> {
  preflight();
  const started = new Date();
  const stamp = runStamp(started);
  const work = await mkdtemp(join(tmpdir(), "meshmart-bench-"));
  cleanups.push(() => rm(work, { recursive: true, force: true }));
  const profileDir = join(ROOT, "bench", "results", `profiles-${stamp}`);

  say(`meshmart catalog benchmark: ${started.toISOString()}`);
  say(
    `node ${process.version}, ${cpus()[0]?.model ?? "?"} x${availableParallelism()}, ${h2loadVersion()}`,
  );
  say(
    `h2load on cpu ${settings.loadCpu}, servers on cpu ${settings.serverCpu}; gRPC -c ${settings.connections} -m ${settings.streams}; ` +
      `Connect --h1 -c ${settings.h1Connections} -m 1; warm-up ${settings.warmupSeconds} s, then ` +
      `${settings.rounds} rounds x ${roundSeconds} s per target`,
  );
  say(
    serverMode() === "compiled"
      ? "servers: compiled (node on tsc output, NODE_ENV=production, as the images run)"
      : "servers: from source under tsx (BENCH_SOURCE=1): NOT what ships, slower than compiled",
  );
  say(
    `servers' ACCESS_LOG=${settings.accessLog}` +
      (settings.accessLog === "errors" ? " (as the cluster deploys them)" : ""),
  );
  if (settings.nodeFlags.length > 0) say(`server node flags: ${settings.nodeFlags.join(" ")}`);
  if (settings.cpuProf.size > 0) {
    say(`!! --cpu-prof on ${[...settings.cpuProf].join(",")}: figures are NOT comparable`);
  }
  const busy = await machineBusy(1000);
  if (busy > 0.1) {
    warnings.push(
      `before the run the machine was ${(busy * 100).toFixed(0)}% busy with other work`,
    );
    say(`!! the machine is ${(busy * 100).toFixed(0)}% busy before we start`);
  }

  // Infrastructure first: it may start Postgres or Redis, which must not inherit our pinning.
  const needCatalog = settings.only.has("c") || settings.only.has("d");
  let db: TestDatabase | undefined;
  let redisUrl: string | undefined;
  if (needCatalog) {
    [db, redisUrl] = await Promise.all([createTestDatabase("bench_catalog"), testRedisUrl()]);
    const created = db;
    cleanups.push(() => created.drop());
  }
  // The runner stays off the servers' core (it samples /proc every 100 ms).
  pinSelf(settings.loadCpu);
  const nodeFlags = (...ids: TargetId[]) => [
    ...settings.nodeFlags,
    ...(ids.some((id) => settings.cpuProf.has(id))
      ? ["--cpu-prof", `--cpu-prof-dir=${join(profileDir, ids.join(""))}`]
      : []),
  ];

  // Start every server (idle ones cost nothing), verify each with a real client.
  const targets: Target[] = [];
  const echoBody = join(work, "echo.grpc");
  await writeFile(
    echoBody,
    grpcFrame(toBinary(EchoRequestSchema, create(EchoRequestSchema, { message: ECHO_MESSAGE }))),
  );
  let bare: ServerChild | undefined;
  if (settings.only.has("a")) {
    bare = await start("bare-echo", "bare-echo.ts", nodeFlags("a"));
    const target = `127.0.0.1:${bare.ready.grpc}`;
    await verifyEcho(target, "a");
    targets.push({
      id: "a",
      server: bare,
      url: `http://${target}${ECHO_PATH}`,
      bodyFile: echoBody,
      h1: false,
      catalog: false,
    });
  }
  if (settings.only.has("b")) {
    const server = await start("kit-echo", "kit-echo.ts", nodeFlags("b"));
    const target = `127.0.0.1:${server.ready.grpc}`;
    await verifyEcho(target, "b");
    targets.push({
      id: "b",
      server,
      url: `http://${target}${ECHO_PATH}`,
      bodyFile: echoBody,
      h1: false,
      admin: { url: `http://127.0.0.1:${server.ready.admin}`, method: "Echo" },
      catalog: false,
    });
  }
  if (needCatalog && db !== undefined && redisUrl !== undefined) {
    const server = await start("catalog", "catalog.ts", nodeFlags("c", "d"), {
      BENCH_DATABASE_URL: db.url,
      BENCH_REDIS_URL: redisUrl,
      BENCH_NATS_URL: await testNatsUrl(),
      BENCH_CACHE_PREFIX: `${uniqueName("bench_catalog")}:`,
    });
    const grpcTarget = `127.0.0.1:${server.ready.grpc}`;
    const httpUrl = `http://127.0.0.1:${server.ready.http}`;
    const admin = { url: `http://127.0.0.1:${server.ready.admin}`, method: "GetProduct" };
    const productId = await firstProductId(httpUrl);
    // The first GetProduct reads Postgres and fills Redis; after it every call is a hit.
    const viaGrpc = await grpcUnary(
      grpcTarget,
      GET_PRODUCT_PATH,
      GetProductRequestSchema,
      GetProductResponseSchema,
      { productId },
    );
    if (viaGrpc.product?.id !== productId) problems.push("(c) verification call: wrong product");
    const viaJson = (await postJson(`${httpUrl}${GET_PRODUCT_PATH}`, { productId })) as {
      product?: { id?: string };
    };
    if (viaJson.product?.id !== productId) problems.push("(d) verification call: wrong product");
    const grpcBody = join(work, "get-product.grpc");
    await writeFile(
      grpcBody,
      grpcFrame(toBinary(GetProductRequestSchema, create(GetProductRequestSchema, { productId }))),
    );
    const jsonBody = join(work, "get-product.json");
    await writeFile(jsonBody, JSON.stringify({ productId }));
    if (settings.only.has("c")) {
      targets.push({
        id: "c",
        server,
        url: `http://${grpcTarget}${GET_PRODUCT_PATH}`,
        bodyFile: grpcBody,
        h1: false,
        admin,
        catalog: true,
      });
    }
    if (settings.only.has("d")) {
      targets.push({
        id: "d",
        server,
        url: `${httpUrl}${GET_PRODUCT_PATH}`,
        bodyFile: jsonBody,
        h1: true,
        admin,
        catalog: true,
      });
    }
  }

  // Warm-up, then the measured rounds, alternating targets.
  const warmups = new Map<TargetId, Run>();
  for (const t of targets) {
    process.stdout.write(`${LABELS[t.id]}: warm-up ${settings.warmupSeconds} s… `);
    const run = await runOnce(t, settings.warmupSeconds);
    warmups.set(t.id, run);
    say(`${Math.round(run.h2.reqPerSec)} req/s`);
  }
  const rounds = new Map<TargetId, Run[]>(targets.map((t) => [t.id, []]));
  for (let round = 1; round <= settings.rounds; round++) {
    const line: string[] = [];
    for (const t of targets) {
      const run = await runOnce(t, roundSeconds, join(work, `${t.id}-${round}.log`));
      rounds.get(t.id)?.push(run);
      line.push(`${t.id} ${Math.round(run.h2.reqPerSec)}`);
    }
    say(`round ${round}/${settings.rounds}: ${line.join(", ")} req/s`);
  }

  const results: Partial<Record<TargetId, TargetResult>> = {};
  for (const t of targets) {
    const warm = warmups.get(t.id);
    const measured = rounds.get(t.id) ?? [];
    if (warm !== undefined) results[t.id] = aggregate(t, warm, measured);
  }

  // Stop the servers; (a) reports what its handler saw, every server its memory.
  const catalogServer = targets.find((t) => t.catalog)?.server;
  const catalogHwm = catalogServer === undefined ? undefined : hwmMb(catalogServer.pid);
  const stopped = new Map<ServerChild, Record<string, unknown>>();
  for (const server of new Set(targets.map((t) => t.server))) {
    stopped.set(server, await server.stop());
  }
  for (const t of targets) {
    const r = results[t.id];
    const exit = stopped.get(t.server);
    if (r !== undefined && exit !== undefined) r.serverExit = exit;
  }
  if (bare !== undefined && results.a !== undefined)
    checkBareCounters(results.a, stopped.get(bare));

  const report = summarize(results, catalogHwm);
  printReport(report);
  const resultsFile = await writeResults("catalog", started, {
    h2load: h2loadVersion(),
    settings: {
      ...settings,
      serverMode: serverMode(),
      roundSeconds,
      only: [...settings.only],
      cpuProf: [...settings.cpuProf],
    },
    ...report,
    problems,
    warnings,
  });
  say(`results: ${resultsFile}`);
  if (settings.cpuProf.size > 0) say(`cpu profiles: ${relative(process.cwd(), profileDir)}`);
  if (problems.length > 0 || report.errors > 0) process.exitCode = 1;
}

function preflight(): void {
  for (const tool of ["h2load", "taskset"]) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" }).status !== 0) {
      const pkg = tool === "h2load" ? "nghttp2-client" : "util-linux";
      console.error(`${tool} is not installed (Debian: apt-get install ${pkg})`);
      process.exit(2);
    }
  }
  if (availableParallelism() < 2) {
    console.warn("!! fewer than 2 CPUs: load and server share a core, figures are meaningless");
  }
}

function h2loadVersion(): string {
  const out = spawnSync("h2load", ["--version"], { encoding: "utf8" }).stdout ?? "";
  return out.trim().split("\n")[0] ?? "h2load";
}

function start(
  name: string,
  file: string,
  nodeFlags: string[],
  env: Record<string, string> = {},
): Promise<ServerChild> {
  return startServer({
    name,
    entry: join(SERVERS, file),
    cwd: ROOT,
    cpu: settings.serverCpu,
    env,
    nodeFlags,
  });
}

/** A gRPC length-prefixed message: flag 0 (uncompressed), big-endian length, bytes. */
function grpcFrame(message: Uint8Array): Buffer {
  const frame = Buffer.alloc(5 + message.byteLength);
  frame.writeUInt8(0, 0);
  frame.writeUInt32BE(message.byteLength, 1);
  frame.set(message, 5);
  return frame;
}

async function verifyEcho(target: string, id: TargetId): Promise<void> {
  const reply = await grpcUnary(target, ECHO_PATH, EchoRequestSchema, EchoResponseSchema, {
    message: ECHO_MESSAGE,
  });
  if (reply.message !== ECHO_MESSAGE) problems.push(`(${id}) verification call: wrong echo`);
}

/** One h2load run against a target, with /proc sampling and the server's counters around it. */
async function runOnce(t: Target, seconds: number, logFile?: string): Promise<Run> {
  const before = t.admin === undefined ? undefined : await scrape(t.admin.url);
  const sampler = new Sampler(t.server.pid);
  const machine = new MachineMonitor();
  const h2 = await runH2load({
    url: t.url,
    bodyFile: t.bodyFile,
    headers: t.h1 ? JSON_HEADERS : GRPC_HEADERS,
    h1: t.h1,
    connections: t.h1 ? settings.h1Connections : settings.connections,
    streams: t.h1 ? 1 : settings.streams,
    cpu: settings.loadCpu,
    durationSeconds: seconds,
    ...(logFile === undefined ? {} : { logFile }),
  });
  const sampled = sampler.stop();
  const load = machine.stop(sampled.cpuSeconds + (h2.cpuSeconds ?? 0));
  const run: Run = {
    h2,
    serverCpuSeconds: sampled.cpuSeconds,
    wallSeconds: sampled.wallSeconds,
    peakRssMb: sampled.peakRssMb,
    ...load,
  };
  if (t.admin !== undefined && before !== undefined) {
    const after = await scrape(t.admin.url);
    run.codes = rpcCodeDeltas(before, after, t.admin.method);
    if (t.catalog) {
      run.cache = {};
      for (const result of ["hit", "miss", "deleted", "error"]) {
        run.cache[result] = metricDelta(before, after, "cache_lookups_total", { result });
      }
    }
  }
  return run;
}

function aggregate(t: Target, warm: Run, measured: Run[]): TargetResult {
  const sum = (f: (r: Run) => number) => measured.reduce((n, r) => n + f(r), 0);
  const succeeded = sum((r) => r.h2.succeeded);
  const wall = sum((r) => r.wallSeconds);
  const latency = percentiles(measured.map((r) => r.h2.latenciesUs ?? new Float64Array()));
  const loadCpu = measured.every((r) => r.h2.cpuSeconds !== undefined)
    ? sum((r) => r.h2.cpuSeconds ?? 0) / wall
    : undefined;
  const result: TargetResult = {
    id: t.id,
    label: LABELS[t.id],
    reqPerSec: succeeded / sum((r) => r.h2.finishedSeconds),
    roundReqPerSec: measured.map((r) => r.h2.reqPerSec),
    p50Ms: latency.p50Ms,
    p90Ms: latency.p90Ms,
    p99Ms: latency.p99Ms,
    maxMs: latency.maxMs,
    requests: succeeded,
    allSucceeded: succeeded + warm.h2.succeeded,
    serverCpu: sum((r) => r.serverCpuSeconds) / wall,
    cpuUsPerRequest: (sum((r) => r.serverCpuSeconds) * 1e6) / Math.max(1, succeeded),
    loadCpu,
    othersCores: Math.max(...measured.map((r) => r.othersCores)),
    stealCores: Math.max(...measured.map((r) => r.stealCores)),
    dependencyCores: sum((r) => r.dependencyCores * r.wallSeconds) / wall,
    serverCpusAllowed: cpusAllowed(t.server.pid),
    errors: 0,
    errorDetail: [],
    commands: [warm, ...measured].map((r) => r.h2.command),
  };
  if (t.catalog) {
    result.peakRssMb = Math.max(...measured.map((r) => r.peakRssMb), warm.peakRssMb);
    const byResult: Record<string, number> = {};
    for (const r of measured) {
      for (const [k, n] of Object.entries(r.cache ?? {})) byResult[k] = (byResult[k] ?? 0) + n;
    }
    const lookups = Object.values(byResult).reduce((a, b) => a + b, 0);
    result.cacheLookups = byResult;
    result.cacheHitRatio = lookups > 0 ? (byResult.hit ?? 0) / lookups : 0;
    if (result.cacheHitRatio < 1) {
      // A miss or a Redis error (its 500 ms command timeout) falls back to Postgres: the
      // answer is still right, but the target is "cache hit", so say how often it was not.
      // Expected: the entry's TTL (60 s) runs out mid-run, and then every request in
      // flight misses at once (no single-flight in the cache).
      const detail = Object.entries(byResult)
        .filter(([k, n]) => k !== "hit" && n > 0)
        .map(([k, n]) => `${n} ${k}`)
        .join(", ");
      const line = `${t.id}: cache hit ratio ${(result.cacheHitRatio * 100).toFixed(2)}% (${detail} of ${lookups})`;
      if (result.cacheHitRatio < 0.99) problems.push(line);
      else warnings.push(line);
    }
  }
  for (const [phase, run] of [
    ["warm-up", warm] as const,
    ...measured.map((r, i) => [`round ${i + 1}`, r] as const),
  ]) {
    const h = run.h2;
    const failures = h2loadFailures(h, phase);
    result.errors += failures.count;
    if (failures.line !== undefined) result.errorDetail.push(failures.line);
    if (run.codes !== undefined) {
      for (const [code, n] of Object.entries(run.codes)) {
        if (code !== "ok" && n > 0) {
          result.errors += n;
          result.errorDetail.push(`${phase}: server answered ${n} x ${code}`);
        }
      }
      // An HTTP 200 the interceptors never saw (grpc-js answering UNIMPLEMENTED) is an error too.
      const ok = run.codes.ok ?? 0;
      if (ok < h.succeeded) {
        result.errors += h.succeeded - ok;
        result.errorDetail.push(
          `${phase}: h2load saw ${h.succeeded} successes, the server counted ${ok} ok`,
        );
      }
    }
    if (phase !== "warm-up" && run.othersCores > NOISE_CORES) {
      warnings.push(
        `${t.id} ${phase}: other processes used ${run.othersCores.toFixed(2)} cores; the machine was not quiet`,
      );
    }
  }
  if (result.serverCpusAllowed !== settings.serverCpu) {
    problems.push(
      `${t.id}: server allowed on cpus ${result.serverCpusAllowed}, expected ${settings.serverCpu}`,
    );
  }
  return result;
}

/** (a) has no metrics: its handler counts calls and failures and prints them on exit. */
function checkBareCounters(r: TargetResult, counters: Record<string, unknown> | undefined): void {
  const ok = Number(counters?.ok);
  const failed = Number(counters?.errors);
  if (!(failed === 0)) {
    r.errors += Number.isNaN(failed) ? 1 : failed;
    r.errorDetail.push(`server counted ${counters?.errors} failed calls`);
  }
  // Every HTTP 200 h2load saw (warm-up and rounds), plus the verification call. A gRPC
  // error grpc-js answers itself (UNIMPLEMENTED for a wrong path) never reaches the handler.
  const seen = r.allSucceeded + 1;
  if (!(ok >= seen)) {
    r.errors += Number.isNaN(ok) ? seen : seen - ok;
    r.errorDetail.push(`h2load and the verification call saw ${seen} successes, the handler ${ok}`);
  }
}

async function scrape(adminUrl: string): Promise<string> {
  const res = await fetch(`${adminUrl}/metrics`);
  if (!res.ok) throw new Error(`GET ${adminUrl}/metrics: HTTP ${res.status}`);
  return res.text();
}

interface Sample {
  labels: Record<string, string>;
  value: number;
}

function metricSamples(text: string, name: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const m = /^[^{\s]+(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (m === null) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[1] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1] ?? ""] = l[2] ?? "";
    }
    out.push({ labels, value: Number(m[2]) });
  }
  return out;
}

function sumMetric(text: string, name: string, filter: Record<string, string>): number {
  let sum = 0;
  for (const s of metricSamples(text, name)) {
    if (Object.entries(filter).every(([k, v]) => s.labels[k] === v)) sum += s.value;
  }
  return sum;
}

function metricDelta(
  before: string,
  after: string,
  name: string,
  filter: Record<string, string>,
): number {
  return sumMetric(after, name, filter) - sumMetric(before, name, filter);
}

/** rpc_requests_total{side="server",method} by code, after minus before. */
function rpcCodeDeltas(before: string, after: string, method: string): Record<string, number> {
  const codes = new Set<string>();
  for (const s of metricSamples(after, "rpc_requests_total")) {
    if (s.labels.side === "server" && s.labels.method === method) codes.add(s.labels.code ?? "");
  }
  const out: Record<string, number> = {};
  for (const code of codes) {
    out[code] = metricDelta(before, after, "rpc_requests_total", { side: "server", method, code });
  }
  return out;
}

async function postJson(url: string, body: unknown): Promise<unknown> {
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`POST ${url}: HTTP ${res.status} ${text}`);
  return JSON.parse(text);
}

async function firstProductId(httpUrl: string): Promise<string> {
  const page = (await postJson(`${httpUrl}${LIST_PRODUCTS_PATH}`, { pageSize: 1 })) as {
    products?: { id?: string }[];
  };
  const id = page.products?.[0]?.id;
  if (id === undefined) throw new Error("catalog has no products: was the demo catalog seeded?");
  return id;
}

/** One unary call with a real gRPC client (grpc-js), protobuf-es codecs. */
async function grpcUnary<I extends DescMessage, O extends DescMessage>(
  target: string,
  path: string,
  input: I,
  output: O,
  request: MessageInitShape<I>,
): Promise<MessageShape<O>> {
  const client = new grpc.Client(target, grpc.credentials.createInsecure());
  try {
    return await new Promise<MessageShape<O>>((resolve, reject) => {
      client.makeUnaryRequest(
        path,
        (m: MessageShape<I>) => Buffer.from(toBinary(input, m)),
        (b: Buffer) => fromBinary(output, b),
        create(input, request),
        { deadline: Date.now() + 10_000 },
        (err, res) =>
          err || res === undefined ? reject(err ?? new Error("no response")) : resolve(res),
      );
    });
  } finally {
    client.close();
  }
}

interface Report {
  results: Partial<Record<TargetId, TargetResult>>;
  ratios: Partial<Record<"b" | "c" | "d", number>>;
  catalogPeakRssMb: number | undefined;
  catalogLifetimePeakRssMb: number | undefined;
  targets: { name: string; value: number | undefined; goal: string; pass: boolean | undefined }[];
  errors: number;
}

function summarize(
  results: Partial<Record<TargetId, TargetResult>>,
  catalogHwm: number | undefined,
): Report {
  const base = results.a?.reqPerSec;
  const ratios: Report["ratios"] = {};
  for (const id of ["b", "c", "d"] as const) {
    const r = results[id];
    if (base !== undefined && r !== undefined) ratios[id] = r.reqPerSec / base;
  }
  const rss = [results.c?.peakRssMb, results.d?.peakRssMb].filter(
    (v): v is number => v !== undefined,
  );
  const catalogPeakRssMb = rss.length > 0 ? Math.max(...rss) : undefined;
  const check = (value: number | undefined, ok: (v: number) => boolean) =>
    value === undefined ? undefined : ok(value);
  const targets = [
    {
      name: "(b)/(a) req/s",
      value: ratios.b,
      goal: `>= ${GOALS.kitOverBare}`,
      pass: check(ratios.b, (v) => v >= GOALS.kitOverBare),
    },
    {
      name: "(c)/(a) req/s",
      value: ratios.c,
      goal: `>= ${GOALS.catalogOverBare}`,
      pass: check(ratios.c, (v) => v >= GOALS.catalogOverBare),
    },
    {
      name: "catalog peak RSS MB (c,d)",
      value: catalogPeakRssMb,
      goal: `< ${GOALS.catalogRssMb}`,
      pass: check(catalogPeakRssMb, (v) => v < GOALS.catalogRssMb),
    },
  ];
  let errors = 0;
  for (const r of Object.values(results)) errors += r.errors;
  return {
    results,
    ratios,
    catalogPeakRssMb,
    catalogLifetimePeakRssMb: catalogHwm,
    targets,
    errors,
  };
}

function printReport(report: Report): void {
  const pad = (s: string, n: number) => s.padEnd(n);
  const lpad = (s: string, n: number) => s.padStart(n);
  const f = (v: number | undefined, d = 2) =>
    v === undefined || Number.isNaN(v) ? "-" : v.toFixed(d);
  const pct = (v: number | undefined) => (v === undefined ? "-" : `${Math.round(v * 100)}%`);
  say();
  say(
    pad("target", 40) +
      lpad("req/s", 8) +
      lpad("spread", 8) +
      lpad("p50 ms", 8) +
      lpad("p99 ms", 8) +
      lpad("vs (a)", 8) +
      lpad("srv CPU", 8) +
      lpad("µs/req", 8) +
      lpad("h2load", 8) +
      lpad("redis+pg", 9) +
      lpad("others", 8) +
      lpad("errors", 8),
  );
  for (const id of IDS) {
    const r = report.results[id];
    if (r === undefined) continue;
    const ratio = id === "a" ? 1 : report.ratios[id];
    const spread =
      r.roundReqPerSec.length > 1
        ? (Math.max(...r.roundReqPerSec) - Math.min(...r.roundReqPerSec)) / r.reqPerSec
        : undefined;
    say(
      pad(r.label, 40) +
        lpad(Math.round(r.reqPerSec).toString(), 8) +
        lpad(spread === undefined ? "-" : `±${Math.round((spread * 100) / 2)}%`, 8) +
        lpad(f(r.p50Ms), 8) +
        lpad(f(r.p99Ms), 8) +
        lpad(f(ratio), 8) +
        lpad(pct(r.serverCpu), 8) +
        lpad(Math.round(r.cpuUsPerRequest).toString(), 8) +
        lpad(pct(r.loadCpu), 8) +
        lpad(r.id === "c" || r.id === "d" ? pct(r.dependencyCores) : "-", 9) +
        lpad(pct(r.othersCores), 8) +
        lpad(String(r.errors), 8),
    );
  }
  say();
  for (const t of report.targets) {
    const invalid = report.errors > 0 || problems.length > 0 ? " (INVALID: run had errors)" : "";
    const verdict = (t.pass === undefined ? "n/a" : t.pass ? "PASS" : "FAIL") + invalid;
    say(`  ${pad(t.name, 28)} ${lpad(f(t.value), 8)}   target ${pad(t.goal, 7)} ${verdict}`);
  }
  const a = report.results.a;
  if (a !== undefined) {
    const cpuRatios = (["b", "c", "d"] as const)
      .map((id) => report.results[id])
      .filter((r): r is TargetResult => r !== undefined)
      .map((r) => `${r.id} ${(a.cpuUsPerRequest / r.cpuUsPerRequest).toFixed(2)}`);
    if (cpuRatios.length > 0) {
      say(`  (a) µs/req ÷ target µs/req (noise-robust cross-check): ${cpuRatios.join(", ")}`);
    }
  }
  const cache = (["c", "d"] as const)
    .map((id) => report.results[id])
    .filter((r): r is TargetResult => r !== undefined)
    .map((r) => `${r.id} ${((r.cacheHitRatio ?? 0) * 100).toFixed(1)}%`);
  if (cache.length > 0) say(`  cache hit ratio: ${cache.join(", ")}`);
  if (report.catalogLifetimePeakRssMb !== undefined) {
    say(
      `  catalog VmHWM (peak RSS over its whole life, start-up included): ${report.catalogLifetimePeakRssMb.toFixed(1)} MB`,
    );
  }
  const withErrors = Object.values(report.results).filter((r) => r.errors > 0);
  if (withErrors.length > 0 || problems.length > 0) {
    say();
    printProblems(say, "ERRORS DURING THE RUN: the figures above are NOT valid", [
      ...withErrors.flatMap((r) => r.errorDetail.map((d) => `${r.label}: ${d}`)),
      ...problems,
    ]);
  }
  if (warnings.length > 0) {
    say();
    printWarnings(say, warnings);
  }
  say();
}

async function cleanup(): Promise<void> {
  killAllServers();
  for (const c of cleanups.reverse()) await c().catch(() => {});
}

await runBenchmark(main, cleanup);
