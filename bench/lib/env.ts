/**
 * An integer setting from the environment: `fallback` when unset or empty; anything else
 * that is not an integer >= `min` ends the benchmark (exit 2) naming the variable.
 */
export function intEnv(name: string, fallback: number, min = 1): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min) {
    console.error(`${name} must be an integer >= ${min}, got '${raw}'`);
    process.exit(2);
  }
  return value;
}

/**
 * The bench servers' ACCESS_LOG: BENCH_ACCESS_LOG, else "errors", the cluster's setting
 * (scripts/deploy/manifests.ts): every failed or slow call logged, successes not (the
 * sidecar logs each request). "all" writes a line per call.
 */
export function benchAccessLog(): string {
  return process.env.BENCH_ACCESS_LOG ?? "errors";
}
