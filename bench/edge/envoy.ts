/**
 * Real Envoy for the edge benchmark: the local config from the production generator
 * (edge/envoy/local.ts), with only its per-client rate-limit buckets raised, validated by
 * Envoy itself, and Envoy started pinned to one core with its stdout (the access log) going
 * straight to a file instead of through this process.
 */
import { createReadStream, readdirSync, readFileSync } from "node:fs";
import { chmod, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { freePort } from "@meshmart/kit/testing";
import { parse, stringify } from "yaml";
import {
  type LocalEdge,
  startEnvoy,
  validateWithEnvoy,
  writeLocalEnvoyConfig,
} from "../../edge/envoy/local.js";

/**
 * What a rate-limit descriptor bucket is raised to, per second and as burst: the same as the
 * generator's route-wide bucket, far above what one core can serve, so no request of the
 * benchmark's single client IP is refused while every request still goes through the filter.
 */
export const BENCH_BUCKET_TOKENS = 1_000_000;

/** What {@link raiseRateLimits} changed. */
export interface RateLimitRewrite {
  /** local_ratelimit configs (route-level) whose descriptors were raised. */
  filters: number;
  /** Descriptor buckets raised. */
  buckets: number;
  /** The distinct limits they had before, e.g. "100 burst / 50 per 1s". */
  before: string[];
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null;

/**
 * Raises every descriptor bucket of every `LocalRateLimit` in a parsed Envoy config to
 * {@link BENCH_BUCKET_TOKENS}, in place. Nothing else changes: the filter stays enabled
 * and enforced, so its per-request cost (descriptor lookup, bucket update) is measured.
 */
export function raiseRateLimits(config: unknown): RateLimitRewrite {
  const out: RateLimitRewrite = { filters: 0, buckets: 0, before: [] };
  const before = new Set<string>();
  const visit = (node: unknown): void => {
    if (Array.isArray(node)) {
      for (const item of node) visit(item);
      return;
    }
    if (!isObject(node)) return;
    const type = node["@type"];
    if (
      typeof type === "string" &&
      type.endsWith(".local_ratelimit.v3.LocalRateLimit") &&
      Array.isArray(node.descriptors)
    ) {
      out.filters++;
      for (const descriptor of node.descriptors) {
        const bucket = isObject(descriptor) ? descriptor.token_bucket : undefined;
        if (!isObject(bucket)) continue;
        before.add(
          `${bucket.max_tokens} burst / ${bucket.tokens_per_fill} per ${bucket.fill_interval ?? "?"}`,
        );
        bucket.max_tokens = BENCH_BUCKET_TOKENS;
        bucket.tokens_per_fill = BENCH_BUCKET_TOKENS;
        out.buckets++;
      }
    }
    for (const value of Object.values(node)) visit(value);
  };
  visit(config);
  out.before = [...before].sort();
  return out;
}

/** Where Envoy's stdout (its access log, one JSON line per request) goes. */
export type AccessLogSink = "file" | "discard";

/** A running, pinned Envoy and the files of its run. */
export interface BenchEnvoy {
  edge: LocalEdge;
  pid: number;
  configFile: string;
  /** The access log file, or /dev/null when discarded. */
  accessLogPath: string;
  rewrite: RateLimitRewrite;
  /** Filters taken out of this copy (BENCH_EDGE_DROP_FILTERS); empty for a real result. */
  dropped: string[];
}

/**
 * Writes the local config for catalog alone (every other upstream is a refused loopback
 * port, as in tests), raises the rate-limit buckets in that copy, validates it with
 * `envoy --mode validate`, and starts Envoy with `--concurrency 1` pinned to `cpu`.
 *
 * Pinning and the access log both happen in a two-line wrapper that startEnvoy runs as the
 * "binary": `exec taskset -c <cpu> envoy "$@" > <log>`. exec keeps one pid, so the pid is
 * Envoy's; taskset pins it before its first instruction, so every thread it ever starts is
 * on `cpu`; and the access log is written by Envoy's own flush thread straight into the file.
 * Read through startEnvoy's pipe instead, every log line would cost this runner's CPU, which
 * shares the load generator's core.
 */
export async function startBenchEnvoy(options: {
  envoyBin: string;
  workDir: string;
  catalog: { grpc: number; http: number };
  cpu: string;
  accessLog: AccessLogSink;
  onStderrLine: (line: string) => void;
  /** HTTP filters to take out of the benchmark's copy (a cost breakdown, never a result). */
  dropFilters?: readonly string[];
}): Promise<BenchEnvoy> {
  const port = await freePort();
  const adminPort = await freePort();
  const configFile = join(options.workDir, "envoy.yaml");
  writeLocalEnvoyConfig(configFile, {
    port,
    adminPort,
    services: new Map([["catalog", options.catalog]]),
  });
  const config: unknown = parse(readFileSync(configFile, "utf8"));
  const rewrite = raiseRateLimits(config);
  if (rewrite.buckets === 0) {
    throw new Error(`${configFile}: no local_ratelimit descriptor buckets found to raise`);
  }
  const dropped = dropFilters(config, options.dropFilters ?? []);
  await writeFile(configFile, stringify(config, { lineWidth: 0 }));
  validateWithEnvoy(options.envoyBin, configFile);

  const accessLogPath =
    options.accessLog === "file" ? join(options.workDir, "access.log") : "/dev/null";
  const wrapper = join(options.workDir, "envoy-pinned.sh");
  await writeFile(
    wrapper,
    `#!/bin/sh\nexec taskset -c ${shellQuote(options.cpu)} ${shellQuote(options.envoyBin)} "$@" >${shellQuote(accessLogPath)}\n`,
  );
  await chmod(wrapper, 0o755);
  const edge = await startEnvoy({
    envoyBin: wrapper,
    configFile,
    port,
    adminPort,
    concurrency: 1,
    logLevel: "warn",
    name: "envoy",
    // Only stderr reaches the pipe now: Envoy's own warnings and errors.
    onLine: options.onStderrLine,
  });
  return { edge, pid: edge.child.pid, configFile, accessLogPath, rewrite, dropped };
}

/**
 * Removes the HTTP filters whose names end with one of `suffixes` (e.g. "lua", "jwt_authn")
 * from every connection manager of `config`, in place; returns the names removed. For
 * BENCH_EDGE_DROP_FILTERS: what each filter costs per request, measured, not guessed.
 */
export function dropFilters(config: unknown, suffixes: readonly string[]): string[] {
  const removed: string[] = [];
  if (suffixes.length === 0) return removed;
  const visit = (node: unknown): void => {
    if (Array.isArray(node)) {
      for (const item of node) visit(item);
      return;
    }
    if (typeof node !== "object" || node === null) return;
    const record = node as Record<string, unknown>;
    const filters = record.http_filters;
    if (Array.isArray(filters)) {
      record.http_filters = filters.filter((f) => {
        const name = String((f as { name?: unknown }).name ?? "");
        const drop = suffixes.some((suffix) => name.endsWith(suffix));
        if (drop) removed.push(name);
        return !drop;
      });
    }
    for (const value of Object.values(record)) visit(value);
  };
  visit(config);
  return removed;
}

function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

/** Every Envoy counter whose name matches `regex` (admin /stats?filter=), summed. */
export async function sumStats(adminUrl: string, regex: string): Promise<number> {
  const res = await fetch(`${adminUrl}/stats?filter=${encodeURIComponent(regex)}`);
  if (!res.ok) throw new Error(`GET ${adminUrl}/stats: HTTP ${res.status}`);
  let total = 0;
  for (const line of (await res.text()).split("\n")) {
    const value = Number(line.slice(line.lastIndexOf(": ") + 2));
    if (line.includes(": ") && Number.isFinite(value)) total += value;
  }
  return total;
}

/**
 * How many threads `pid` has, and the distinct CPU lists they may run on (one entry when
 * all agree). Checked per thread: a thread that escaped the pinning would run on the load
 * generator's core.
 */
export function threadsCpusAllowed(pid: number): { threads: number; cpus: string[] } {
  const lists = new Set<string>();
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return { threads: 0, cpus: [] };
  }
  for (const task of tasks) {
    try {
      const status = readFileSync(`/proc/${pid}/task/${task}/status`, "utf8");
      const m = /^Cpus_allowed_list:\s*(.+)$/m.exec(status);
      if (m?.[1] !== undefined) lists.add(m[1].trim());
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return { threads: tasks.length, cpus: [...lists].sort() };
}

/** Lines and bytes of a file, streamed (the access log can be hundreds of MB). */
export async function countLines(path: string): Promise<{ lines: number; bytes: number }> {
  let lines = 0;
  let bytes = 0;
  for await (const chunk of createReadStream(path)) {
    const buffer = chunk as Buffer;
    bytes += buffer.byteLength;
    for (let at = buffer.indexOf(10); at !== -1; at = buffer.indexOf(10, at + 1)) lines++;
  }
  return { lines, bytes };
}
