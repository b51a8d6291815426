/**
 * The mesh benchmark (`npm run bench:mesh`, issue 11 §4 "What the mesh costs"): in one run,
 * on one machine, catalog GetProduct called as orders calls it,
 *
 *   (1) direct: h2c gRPC to catalog's own port,
 *   (2) through orders' sidecar → mTLS → catalog's sidecar, the configs as generated,
 *
 * plus variants of the sidecar configs (access log on, RBAC removed, XFCC off, retries off,
 * plaintext between the sidecars, all of those) post-processed from the generated JSON, so
 * each piece's CPU per request is measured. Every Envoy runs `--concurrency 1`. Pinned as
 * two pods would be: h2load (standing in for orders) and orders' sidecar on one core,
 * catalog and its sidecar on the other. Warm-up, then alternating rounds. Prints req/s,
 * p50/p90/p99, CPU µs per request of catalog and of each sidecar, Istio's published figures
 * as the anchor, the targets (≤ 150 µs per sidecar, ≤ 1 ms added p99), and the pieces'
 * costs; writes bench/results/mesh-<timestamp>.json. See bench/mesh/README.md.
 */
import { spawnSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { availableParallelism, cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { ENVOY_VERSION, toolPath } from "../../scripts/lib/tools.js";
import { killAllServers, serverMode } from "../catalog/children.js";
import { runH2load } from "../catalog/h2load.js";
import {
  checkMachineQuiet,
  cpuSeconds,
  MachineMonitor,
  pinSelf,
  Sampler,
} from "../catalog/proc.js";
import {
  GET_PRODUCT_PATH,
  getProductBody,
  grpcGetProduct,
  rpcCodeDeltas,
  scrape,
  startCatalogChild,
} from "../edge/common.js";
import { sumStats } from "../edge/envoy.js";
import { intEnv } from "../lib/env.js";
import { printProblems, printWarnings, writeResults } from "../lib/report.js";
import { alternateRounds } from "../lib/rounds.js";
import { runBenchmark } from "../lib/run-benchmark.js";
import { checkPair, type PairCheck } from "./checks.js";
import { type Figures, type Run, type SidecarCounters, summarize } from "./figures.js";
import { printFigures, type Target } from "./print.js";
import { type SidecarPair, startSidecarPair } from "./sidecars.js";
import { VARIANTS, type Variant, type VariantId } from "./variants.js";

/** Other processes above this share of a core in a round make the figures unreliable. */
const NOISE_CORES = 0.1;
const loadCpu = process.env.BENCH_LOAD_CPU ?? "0";
const catalogCpu = process.env.BENCH_SERVER_CPU ?? "1";
const settings = {
  durationSeconds: intEnv("BENCH_DURATION", 12),
  rounds: intEnv("BENCH_ROUNDS", 3),
  warmupSeconds: intEnv("BENCH_WARMUP", 3),
  connections: intEnv("BENCH_CONNECTIONS", 8),
  streams: intEnv("BENCH_STREAMS", 8),
  loadCpu,
  catalogCpu,
  /** orders' pod: its sidecar shares the caller's core. */
  clientSidecarCpu: process.env.BENCH_CLIENT_SIDECAR_CPU ?? loadCpu,
  /** catalog's pod: its sidecar shares catalog's core. */
  serverSidecarCpu: process.env.BENCH_SERVER_SIDECAR_CPU ?? catalogCpu,
  variants: selectedVariants(),
};
const roundSeconds = Math.max(1, Math.round(settings.durationSeconds / settings.rounds));
const say = (line = ""): void => {
  process.stdout.write(`${line}\n`);
};
const problems: string[] = [];
const warnings: string[] = [];
const cleanups: (() => Promise<unknown>)[] = [];
/**
 * Envoy warnings every sidecar prints, counted and summed up in one line instead of
 * printed: the generator's deprecated `max_grpc_timeout` (one per route; chosen on purpose,
 * see scripts/mesh/sidecar-config.ts), no global downstream connection limit (Istio sets
 * none either), and the SIGTERM at the end of every run.
 */
const KNOWN_ENVOY_WARNINGS = [
  "RouteAction.max_grpc_timeout",
  "no configured limit to the number of allowed active downstream connections",
  "caught ENVOY_SIGTERM",
] as const;
const knownWarnings = new Map<string, number>();

/** BENCH_VARIANTS: a subset of the variants ("log,plaintext"); base always runs. */
function selectedVariants(): Variant[] {
  const raw = process.env.BENCH_VARIANTS;
  if (raw === undefined || raw === "") return [...VARIANTS];
  const wanted = new Set(raw.split(",").map((s) => s.trim()));
  for (const w of wanted) {
    if (!VARIANTS.some((v) => v.id === w)) {
      console.error(
        `BENCH_VARIANTS: unknown variant '${w}' (variants: ${VARIANTS.map((v) => v.id).join(", ")})`,
      );
      process.exit(2);
    }
  }
  return VARIANTS.filter((v) => v.id === "base" || wanted.has(v.id));
}

async function main(): Promise<void> {
  for (const tool of ["h2load", "taskset", "openssl"]) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" }).status !== 0) {
      throw new Error(`${tool} is not installed (Debian: nghttp2-client, util-linux, openssl)`);
    }
  }
  const envoyBin = toolPath("envoy");
  const started = new Date();
  const work = await mkdtemp(join(tmpdir(), "meshmart-bench-mesh-"));
  cleanups.push(() => rm(work, { recursive: true, force: true }));
  say(`meshmart mesh benchmark: ${started.toISOString()}`);
  say(`node ${process.version}, ${cpus()[0]?.model ?? "?"} x${availableParallelism()}`);
  say(
    `catalog: ${serverMode() === "compiled" ? "compiled, as the images run" : "from source under tsx (BENCH_SOURCE=1)"}; ` +
      `sidecars: Envoy ${ENVOY_VERSION} (${envoyBin}), --concurrency 1, configs from scripts/mesh/local-mesh.ts`,
  );
  say(
    `h2load (standing in for orders) on cpu ${settings.loadCpu}, orders' sidecar on cpu ${settings.clientSidecarCpu}; ` +
      `catalog on cpu ${settings.catalogCpu}, catalog's sidecar on cpu ${settings.serverSidecarCpu}`,
  );
  say(
    `h2load -c ${settings.connections} -m ${settings.streams} (${settings.connections * settings.streams} in flight), gRPC frame body; ` +
      `warm-up ${settings.warmupSeconds} s, then ${settings.rounds} rounds x ${roundSeconds} s per target`,
  );
  const busy = await checkMachineQuiet(say, warnings);

  // Postgres/Redis (if started here) must not inherit our pinning: infrastructure first.
  const catalog = await startCatalogChild(settings.catalogCpu);
  cleanups.push(() => catalog.db.drop());
  pinSelf(settings.loadCpu);
  const { grpc, http, admin } = catalog.server.ready;
  if (http === undefined || admin === undefined)
    throw new Error("catalog announced no http/admin port");

  const pairs = new Map<VariantId, SidecarPair>();
  for (const variant of settings.variants) {
    const pair = await startSidecarPair({
      envoyBin,
      dir: join(work, variant.id),
      variant,
      catalog: { grpc, http, admin },
      clientCpu: settings.clientSidecarCpu,
      serverCpu: settings.serverSidecarCpu,
      onStderrLine: (name, line) => {
        const known = KNOWN_ENVOY_WARNINGS.find((w) => line.includes(w));
        if (known === undefined) process.stderr.write(`\n[${name}] ${line}\n`);
        else knownWarnings.set(known, (knownWarnings.get(known) ?? 0) + 1);
      },
    });
    // Cleanups run in reverse: every sidecar stops before catalog.
    cleanups.push(
      () => pair.client.close(),
      () => pair.server.close(),
    );
    pairs.set(variant.id, pair);
    // A real gRPC client through the pair, as orders' CatalogClient dials it.
    const reply = await grpcGetProduct(`127.0.0.1:${pair.outboundGrpc}`, catalog.productId);
    if (reply.product?.id !== catalog.productId) {
      throw new Error(`${variant.id}: GetProduct through the sidecars returned the wrong product`);
    }
    say(
      `sidecars ${variant.id}: ${variant.what}${pair.changes.length > 0 ? `; ${pair.changes.join("; ")}` : ""}`,
    );
  }
  const base = pairs.get("base");
  if (base === undefined) throw new Error("no base pair");
  say(`generated configs (base): ${base.client.configFile}, ${base.server.configFile}`);

  const grpcBody = join(work, "get-product.grpc");
  await writeFile(grpcBody, getProductBody(catalog.productId));
  const targets: Target[] = ["direct", ...settings.variants.map((v) => v.id)];
  const allSidecarPids = [...pairs.values()].flatMap((p) => [p.client.pid, p.server.pid]);

  const runOnce = async (target: Target, seconds: number, logFile?: string): Promise<Run> => {
    const pair = target === "direct" ? undefined : pairs.get(target);
    const codesBefore = await scrape(catalog.adminUrl);
    const countersBefore = await counters(pair);
    const idle = allSidecarPids.filter(
      (pid) => pid !== pair?.client.pid && pid !== pair?.server.pid,
    );
    const idleBefore = idle.map((pid) => cpuSeconds(pid) ?? 0);
    const cat = new Sampler(catalog.server.pid);
    const cli = pair === undefined ? undefined : new Sampler(pair.client.pid);
    const srv = pair === undefined ? undefined : new Sampler(pair.server.pid);
    const machine = new MachineMonitor();
    const h2 = await runH2load({
      url: `http://127.0.0.1:${pair === undefined ? grpc : pair.outboundGrpc}${GET_PRODUCT_PATH}`,
      bodyFile: grpcBody,
      headers: ["content-type: application/grpc", "te: trailers"],
      h1: false,
      connections: settings.connections,
      streams: settings.streams,
      cpu: settings.loadCpu,
      durationSeconds: seconds,
      ...(logFile === undefined ? {} : { logFile }),
    });
    const c = cat.stop();
    const cl = cli?.stop();
    const sv = srv?.stop();
    // The idle pairs' stats flushes are ours too, not another job's.
    const idleCpu = idle.reduce(
      (n, pid, i) => n + (cpuSeconds(pid) ?? 0) - (idleBefore[i] ?? 0),
      0,
    );
    const ours = c.cpuSeconds + (cl?.cpuSeconds ?? 0) + (sv?.cpuSeconds ?? 0) + idleCpu;
    const load = machine.stop(ours + (h2.cpuSeconds ?? 0));
    const countersAfter = await counters(pair);
    return {
      h2,
      cpu: { catalog: c.cpuSeconds, client: cl?.cpuSeconds ?? 0, server: sv?.cpuSeconds ?? 0 },
      peakRssMb: { client: cl?.peakRssMb ?? 0, server: sv?.peakRssMb ?? 0 },
      wallSeconds: c.wallSeconds,
      othersCores: load.othersCores,
      dependencyCores: load.dependencyCores,
      codes: rpcCodeDeltas(codesBefore, await scrape(catalog.adminUrl), "GetProduct"),
      counters: {
        rbacAllowed: countersAfter.rbacAllowed - countersBefore.rbacAllowed,
        rbacDenied: countersAfter.rbacDenied - countersBefore.rbacDenied,
        retries: countersAfter.retries - countersBefore.retries,
        overflows: countersAfter.overflows - countersBefore.overflows,
      },
    };
  };

  const { warm, rounds } = await alternateRounds({
    targets,
    warmupSeconds: settings.warmupSeconds,
    rounds: settings.rounds,
    roundSeconds,
    run: (target, seconds, round) =>
      round === undefined
        ? runOnce(target, seconds)
        : runOnce(target, seconds, join(work, `${target}-${round}.log`)),
    reqPerSec: (run) => run.h2.reqPerSec,
    say,
  });

  const results = new Map<Target, Figures>();
  for (const target of targets) {
    const measured = rounds.get(target) ?? [];
    const figures = summarize(warm.get(target) as Run, measured);
    results.set(target, figures);
    for (const detail of figures.errorDetail) problems.push(`${target} ${detail}`);
    measured.forEach((r, i) => {
      if (r.othersCores > NOISE_CORES)
        warnings.push(
          `${target} round ${i + 1}: other processes used ${r.othersCores.toFixed(2)} cores`,
        );
    });
    if (figures.retries > 0)
      warnings.push(
        `${target}: the client sidecar retried ${figures.retries} calls (each one a second catalog call)`,
      );
  }

  // What the sidecars' own counters and threads say: each variant is what it claims.
  const checks = new Map<VariantId, PairCheck>();
  for (const pair of pairs.values()) {
    const id = pair.variant.id;
    const served = [warm.get(id), ...(rounds.get(id) ?? [])].reduce(
      (n, r) => n + (r?.h2.succeeded ?? 0),
      0,
    );
    const check = await checkPair(pair, {
      rbacAllowed: results.get(id)?.rbacAllowed ?? 0,
      served,
      clientCpu: settings.clientSidecarCpu,
      serverCpu: settings.serverSidecarCpu,
    });
    problems.push(...check.problems);
    checks.set(id, check);
  }

  const stopped = { catalog: await catalog.server.stop() };
  const invalid = problems.length > 0;
  say();
  const judged = printFigures(say, {
    targets,
    results,
    variants: settings.variants,
    inFlight: settings.connections * settings.streams,
    invalid,
  });
  const baseCheck = checks.get("base");
  say(
    `  sidecars: ${baseCheck?.threads.client.threads} threads each, pinned as above (checked per thread); ` +
      `mTLS negotiated: ${baseCheck?.tlsVersion ?? "?"}`,
  );
  const logged = checks.get("log")?.accessLog;
  if (logged !== undefined) {
    const mb = (bytes: number) => (bytes / 1e6).toFixed(1);
    say(
      `  access log (log): client ${logged.client.lines} lines ${mb(logged.client.bytes)} MB, ` +
        `server ${logged.server.lines} lines ${mb(logged.server.bytes)} MB, written to files by Envoy`,
    );
  }
  say(
    `  Envoy warnings counted, not printed: ${
      [...knownWarnings]
        .filter(([w]) => !w.includes("SIGTERM"))
        .map(([w, n]) => `${n} x "${w}"`)
        .join(", ") || "none"
    }`,
  );
  if (invalid)
    printProblems(say, "ERRORS DURING THE RUN: the figures above are NOT valid", problems);
  printWarnings(say, warnings);
  const resultsFile = await writeResults("mesh", started, {
    settings: {
      ...settings,
      variants: settings.variants.map((v) => v.id),
      roundSeconds,
      serverMode: serverMode(),
    },
    envoy: { version: ENVOY_VERSION, binary: envoyBin, concurrency: 1 },
    machineBusyBefore: busy,
    variants: settings.variants.map(({ id, what, piece, effect, accessLog, mtls, rbac }) => ({
      id,
      what,
      piece,
      effect,
      accessLog,
      mtls,
      rbac,
    })),
    results: Object.fromEntries(results),
    verdicts: { ...judged, valid: !invalid },
    sidecarChecks: Object.fromEntries(checks),
    envoyWarnings: Object.fromEntries(knownWarnings),
    serverExit: stopped,
    problems,
    warnings,
  });
  say(`results: ${resultsFile}`);
  if (invalid) process.exitCode = 1;
}

/** The sidecars' counters that make a run invalid or explain it (zeros for direct). */
async function counters(pair: SidecarPair | undefined): Promise<SidecarCounters> {
  if (pair === undefined) return { rbacAllowed: 0, rbacDenied: 0, retries: 0, overflows: 0 };
  const [rbacAllowed, rbacDenied, retries, overflows] = await Promise.all([
    sumStats(pair.server.adminUrl, "\\.rbac\\.allowed$"),
    sumStats(pair.server.adminUrl, "\\.rbac\\.denied$"),
    sumStats(pair.client.adminUrl, "\\.upstream_rq_retry$"),
    sumStats(pair.client.adminUrl, "_overflow$"),
  ]);
  return { rbacAllowed, rbacDenied, retries, overflows };
}

async function cleanup(): Promise<void> {
  killAllServers();
  for (const c of cleanups.reverse()) await c().catch(() => {});
}

await runBenchmark(main, cleanup);
