/**
 * The mesh benchmark's arithmetic: one target's runs (warm-up and measured rounds) summed
 * into req/s, latency percentiles, CPU per request of catalog and of each sidecar, and the
 * errors that make a run invalid; then the cost of each config piece from the variants.
 */
import { type H2loadResult, h2loadFailures, percentiles } from "../catalog/h2load.js";
import type { Variant } from "./variants.js";

/** What the sidecars' own counters said about one run (deltas; zeros for direct). */
export interface SidecarCounters {
  /** Requests the server sidecar's RBAC filter allowed / denied. */
  rbacAllowed: number;
  rbacDenied: number;
  /** Retries the client sidecar made (each one is a second catalog call). */
  retries: number;
  /** Requests the client sidecar's circuit breakers refused. */
  overflows: number;
}

/** One h2load run against one target, and what every process spent during it. */
export interface Run {
  h2: H2loadResult;
  /** CPU seconds during the run (0 for the sidecars in direct). */
  cpu: { catalog: number; client: number; server: number };
  peakRssMb: { client: number; server: number };
  wallSeconds: number;
  othersCores: number;
  dependencyCores: number;
  /** catalog's rpc_requests_total{method="GetProduct"} by code, during the run. */
  codes: Record<string, number>;
  counters: SidecarCounters;
}

type Proc = "catalog" | "client" | "server";
const PROCS: readonly Proc[] = ["catalog", "client", "server"];

/** A target's figures over its measured rounds; errors over the warm-up too. */
export interface Figures {
  reqPerSec: number;
  roundReqPerSec: number[];
  /** Half the range of the rounds' req/s, as a share of req/s. */
  spread: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  requests: number;
  /** Cores each process used (1 = one core busy), and h2load's. */
  cores: Record<Proc | "load", number>;
  /** CPU µs per successful request. */
  usPerRequest: Record<Proc, number>;
  /** The same per round: how far it moves is the noise of the figure above. */
  roundUsPerRequest: Record<Proc, number[]>;
  peakRssMb: { client: number; server: number };
  dependencyCores: number;
  /** Other processes' CPU in the worst round (another job on the machine). */
  othersCores: number;
  retries: number;
  rbacAllowed: number;
  errors: number;
  errorDetail: string[];
  commands: string[];
}

/**
 * Sums `measured` into {@link Figures}. Every HTTP 200 h2load counted must be an OK
 * GetProduct on catalog's side (a sidecar's own gRPC error is an HTTP 200 too), and no
 * request may be denied by RBAC or refused by a circuit breaker.
 */
export function summarize(warm: Run, measured: readonly Run[]): Figures {
  const sum = (f: (r: Run) => number) => measured.reduce((n, r) => n + f(r), 0);
  const succeeded = sum((r) => r.h2.succeeded);
  const n = Math.max(1, succeeded);
  const wall = sum((r) => r.wallSeconds);
  const lat = percentiles(measured.map((r) => r.h2.latenciesUs ?? new Float64Array()));
  const perRound = measured.map((r) => r.h2.reqPerSec);
  const reqPerSec = succeeded / sum((r) => r.h2.finishedSeconds);
  const perProc = <T>(f: (p: Proc) => T) =>
    Object.fromEntries(PROCS.map((p) => [p, f(p)])) as Record<Proc, T>;
  const errorDetail = measured.flatMap((r, i) => runErrors(`round ${i + 1}`, r));
  errorDetail.unshift(...runErrors("warm-up", warm));
  return {
    reqPerSec,
    roundReqPerSec: perRound,
    spread: perRound.length > 1 ? (Math.max(...perRound) - Math.min(...perRound)) / reqPerSec : 0,
    p50Ms: lat.p50Ms,
    p90Ms: lat.p90Ms,
    p99Ms: lat.p99Ms,
    maxMs: lat.maxMs,
    requests: succeeded,
    cores: {
      ...perProc((p) => sum((r) => r.cpu[p]) / wall),
      load: sum((r) => r.h2.cpuSeconds ?? Number.NaN) / wall,
    },
    usPerRequest: perProc((p) => (sum((r) => r.cpu[p]) * 1e6) / n),
    roundUsPerRequest: perProc((p) =>
      measured.map((r) => (r.cpu[p] * 1e6) / Math.max(1, r.h2.succeeded)),
    ),
    peakRssMb: {
      client: Math.max(...measured.map((r) => r.peakRssMb.client)),
      server: Math.max(...measured.map((r) => r.peakRssMb.server)),
    },
    dependencyCores: sum((r) => r.dependencyCores * r.wallSeconds) / wall,
    othersCores: Math.max(...measured.map((r) => r.othersCores)),
    retries: sum((r) => r.counters.retries),
    rbacAllowed: sum((r) => r.counters.rbacAllowed),
    errors: errorDetail.length,
    errorDetail,
    commands: [warm, ...measured].map((r) => r.h2.command),
  };
}

/** What went wrong in one run, one line per kind of failure. */
function runErrors(phase: string, run: Run): string[] {
  const out: string[] = [];
  const h = run.h2;
  const failures = h2loadFailures(h, phase);
  if (failures.line !== undefined) out.push(failures.line);
  for (const [code, count] of Object.entries(run.codes)) {
    if (code !== "ok" && count > 0) out.push(`${phase}: catalog answered ${count} x ${code}`);
  }
  const ok = run.codes.ok ?? 0;
  if (ok < h.succeeded) {
    out.push(`${phase}: h2load saw ${h.succeeded} HTTP 200s, catalog counted ${ok} ok`);
  }
  if (run.counters.rbacDenied > 0) {
    out.push(`${phase}: the server sidecar's RBAC denied ${run.counters.rbacDenied} requests`);
  }
  if (run.counters.overflows > 0) {
    out.push(`${phase}: the client sidecar's circuit breakers refused ${run.counters.overflows}`);
  }
  return out;
}

/** What one config piece costs per request on each sidecar, from a variant against base. */
export interface PieceCost {
  variant: Variant;
  /** µs per request the piece costs on the client / server sidecar (negative: saves). */
  client: number;
  server: number;
  /** Both sidecars together. */
  total: number;
}

/**
 * The cost of each variant's piece: the variant minus base when the variant adds it, base
 * minus the variant when it takes it away.
 */
export function pieceCost(variant: Variant, base: Figures, measured: Figures): PieceCost {
  const sign = variant.effect === "adds" ? 1 : -1;
  const client = sign * (measured.usPerRequest.client - base.usPerRequest.client);
  const server = sign * (measured.usPerRequest.server - base.usPerRequest.server);
  return { variant, client, server, total: client + server };
}

/** Half the range of a figure's per-round values: how far one round moves it. */
export function halfRange(values: readonly number[]): number {
  return values.length < 2 ? 0 : (Math.max(...values) - Math.min(...values)) / 2;
}
