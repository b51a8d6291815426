/**
 * The mesh benchmark's printout: the figures table, Istio's published figures as the
 * anchor, the targets with PASS/FAIL and ratios, and what each config piece costs.
 */
import { type Figures, halfRange, type PieceCost, pieceCost } from "./figures.js";
import type { Variant, VariantId } from "./variants.js";

/** A benchmark target: direct gRPC to catalog, or one variant's sidecar pair. */
export type Target = "direct" | VariantId;

/** At most this many µs of CPU per request on each sidecar (issue 11 §4). */
export const GOAL_SIDECAR_US = 150;
/** At most this much added to p99 at 64 in flight (mesh p99 − direct p99). */
export const GOAL_ADDED_P99_MS = 1;
/**
 * Istio's published figures ("Performance and Scalability", Istio 1.10–1.16 docs): the
 * sidecar uses 0.35 vCPU per 1,000 req/s through it (350 µs per request) and the proxies
 * add 2.65 ms at p90 (client and server sidecar, 1,000 req/s, 16 connections, 1 kB).
 */
export const ISTIO_SIDECAR_US = 350;
export const ISTIO_ADDED_P90_MS = 2.65;

/** The verdicts, for the results file. */
export interface Verdicts {
  clientSidecarUs: number;
  serverSidecarUs: number;
  clientPass: boolean;
  serverPass: boolean;
  addedP99Ms: number;
  addedP99Pass: boolean;
  addedP90Ms: number;
  addedP50Ms: number;
  meshReqPerSecRatio: number;
  pieces: { variant: VariantId; client: number; server: number; total: number }[];
  costliest: VariantId | undefined;
}

const f = (v: number, d = 2) => (Number.isFinite(v) ? v.toFixed(d) : "-");
const pct = (v: number) => (Number.isFinite(v) ? `${Math.round(v * 100)}%` : "-");
const signed = (v: number, d = 1) =>
  Number.isFinite(v) ? `${v >= 0 ? "+" : ""}${v.toFixed(d)}` : "-";
const row = (label: string, width: number, cells: string[], cell = 9) =>
  label.padEnd(width) + cells.map((c) => c.padStart(cell)).join("");

/** Prints every table and verdict; returns the verdicts. */
export function printFigures(
  say: (line?: string) => void,
  options: {
    targets: readonly Target[];
    results: ReadonlyMap<Target, Figures>;
    variants: readonly Variant[];
    /** Requests in flight (h2load connections × streams). */
    inFlight: number;
    invalid: boolean;
  },
): Verdicts {
  const { targets, results, variants } = options;
  const direct = results.get("direct") as Figures;
  const base = results.get("base") as Figures;
  const labelOf = (t: Target) =>
    t === "direct"
      ? "(1) direct → catalog"
      : t === "base"
        ? "(2) mesh, as generated"
        : `    mesh, ${t}`;
  say(
    row("target", 26, [
      "req/s",
      "spread",
      "p50 ms",
      "p90 ms",
      "p99 ms",
      "cat µs",
      "cli µs",
      "srv µs",
      "cat CPU",
      "cli CPU",
      "srv CPU",
      "h2load",
      "redis+pg",
      "others",
      "errors",
    ]),
  );
  for (const t of targets) {
    const r = results.get(t);
    if (r === undefined) continue;
    // The sidecars idle during direct: their figures there are not part of serving.
    const sidecar = (text: string) => (t === "direct" ? "-" : text);
    say(
      row(labelOf(t), 26, [
        String(Math.round(r.reqPerSec)),
        `±${Math.round(r.spread * 50)}%`,
        f(r.p50Ms),
        f(r.p90Ms),
        f(r.p99Ms),
        String(Math.round(r.usPerRequest.catalog)),
        sidecar(String(Math.round(r.usPerRequest.client))),
        sidecar(String(Math.round(r.usPerRequest.server))),
        pct(r.cores.catalog),
        sidecar(pct(r.cores.client)),
        sidecar(pct(r.cores.server)),
        pct(r.cores.load),
        pct(r.dependencyCores),
        pct(r.othersCores),
        String(r.errors),
      ]),
    );
  }

  const mark = (pass: boolean) =>
    `${pass ? "PASS" : "FAIL"}${options.invalid ? " (INVALID: see below)" : ""}`;
  const clientUs = base.usPerRequest.client;
  const serverUs = base.usPerRequest.server;
  const addedP99 = base.p99Ms - direct.p99Ms;
  const addedP90 = base.p90Ms - direct.p90Ms;
  const addedP50 = base.p50Ms - direct.p50Ms;
  const inFlight = `both at ${options.inFlight} in flight`;
  say();
  say(
    `Anchor, Istio's published figures (istio.io "Performance and Scalability", 1.10-1.16): ` +
      `${ISTIO_SIDECAR_US / 1000} vCPU per 1,000 req/s per sidecar = ${ISTIO_SIDECAR_US} µs per request; +${ISTIO_ADDED_P90_MS} ms at p90 (both sidecars, 1,000 req/s)`,
  );
  say("Targets (mesh as generated vs direct, same run):");
  for (const [side, us] of [
    ["client sidecar (orders')", clientUs],
    ["server sidecar (catalog's)", serverUs],
  ] as const) {
    say(
      `  ${`${side} CPU per request`.padEnd(40)}${f(us, 0).padStart(7)} µs   ≤ ${GOAL_SIDECAR_US} µs: ${mark(us <= GOAL_SIDECAR_US)}` +
        `  (${f(us / GOAL_SIDECAR_US)} × target; ${f(us / ISTIO_SIDECAR_US)} × Istio's ${ISTIO_SIDECAR_US} µs)`,
    );
  }
  say(
    `  ${"added p99 (mesh p99 − direct p99)".padEnd(40)}${f(addedP99).padStart(7)} ms   ≤ ${GOAL_ADDED_P99_MS} ms: ${mark(addedP99 <= GOAL_ADDED_P99_MS)}` +
      `  (${f(addedP99 / GOAL_ADDED_P99_MS)} × target; p99 ${f(base.p99Ms)} vs ${f(direct.p99Ms)} ms, ${inFlight})`,
  );
  say(
    `  ${"added p90 / p50, for reference".padEnd(40)}${f(addedP90).padStart(7)} / ${f(addedP50)} ms` +
      `  (p90: ${f(addedP90 / ISTIO_ADDED_P90_MS)} × Istio's +${ISTIO_ADDED_P90_MS} ms, which was not at saturation)`,
  );
  say(
    `  ${"mesh ÷ direct req/s".padEnd(40)}${f(base.reqPerSec / direct.reqPerSec).padStart(7)}` +
      `      (catalog ${f(base.usPerRequest.catalog, 0)} µs/req behind the mesh vs ${f(direct.usPerRequest.catalog, 0)} direct; ` +
      `sidecars' peak RSS ${f(base.peakRssMb.client, 0)} / ${f(base.peakRssMb.server, 0)} MB)`,
  );

  // The pieces: each variant against base, on each sidecar.
  const noise = {
    client: halfRange(base.roundUsPerRequest.client),
    server: halfRange(base.roundUsPerRequest.server),
  };
  const pieces: PieceCost[] = [];
  for (const v of variants) {
    const r = results.get(v.id);
    if (v.effect === "none" || r === undefined) continue;
    pieces.push(pieceCost(v, base, r));
  }
  let costliest: PieceCost | undefined;
  if (pieces.length > 0) {
    say();
    say(
      `What each piece of the generated config costs, µs of CPU per request (variant vs as generated; ` +
        `base's own rounds move by ±${f(noise.client, 1)} client, ±${f(noise.server, 1)} server):`,
    );
    say(
      row(
        "piece",
        44,
        ["variant", "req/s", "p99 ms", "cli µs", "srv µs", "cost cli", "cost srv", "both"],
        10,
      ),
    );
    for (const p of pieces) {
      const r = results.get(p.variant.id) as Figures;
      say(
        row(
          `${p.variant.piece}${p.variant.effect === "adds" ? " (added)" : ""}`,
          44,
          [
            p.variant.id,
            String(Math.round(r.reqPerSec)),
            f(r.p99Ms),
            f(r.usPerRequest.client, 0),
            f(r.usPerRequest.server, 0),
            signed(p.client),
            signed(p.server),
            signed(p.total),
          ],
          10,
        ),
      );
    }
    // "bare" is the sum of the others: the single costliest piece is among the rest.
    const singles = pieces.filter((p) => p.variant.id !== "bare");
    costliest = singles.reduce<PieceCost | undefined>(
      (m, p) => (m === undefined || p.total > m.total ? p : m),
      undefined,
    );
    if (costliest !== undefined) {
      const within = costliest.total <= 2 * (noise.client + noise.server);
      say(
        `  costs most: ${costliest.variant.piece}: ${f(costliest.total, 1)} µs per request over both sidecars ` +
          `(client ${f(costliest.client, 1)}, server ${f(costliest.server, 1)}) of the pair's ${f(clientUs + serverUs, 0)} µs` +
          (within ? "; NOT clear of the noise (run longer: BENCH_DURATION)" : ""),
      );
    }
    const bare = results.get("bare");
    if (bare !== undefined) {
      say(
        `  left in bare (two plain HTTP/2 Envoy hops): client ${f(bare.usPerRequest.client, 0)} µs, server ${f(bare.usPerRequest.server, 0)} µs per request`,
      );
    }
  }
  return {
    clientSidecarUs: clientUs,
    serverSidecarUs: serverUs,
    clientPass: clientUs <= GOAL_SIDECAR_US,
    serverPass: serverUs <= GOAL_SIDECAR_US,
    addedP99Ms: addedP99,
    addedP99Pass: addedP99 <= GOAL_ADDED_P99_MS,
    addedP90Ms: addedP90,
    addedP50Ms: addedP50,
    meshReqPerSecRatio: base.reqPerSec / direct.reqPerSec,
    pieces: pieces.map((p) => ({
      variant: p.variant.id,
      client: p.client,
      server: p.server,
      total: p.total,
    })),
    costliest: costliest?.variant.id,
  };
}
