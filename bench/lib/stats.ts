/** Summaries the benchmarks print: nearest-rank percentiles, means, and a plain sleep. */

/** Count, nearest-rank p50 and p99, and the maximum of a sample. */
export interface Stats {
  count: number;
  p50: number;
  p99: number;
  max: number;
}

/** {@link Stats} of `values` (NaN for an empty sample). */
export function stats(values: readonly number[]): Stats {
  const sorted = Float64Array.from(values).sort();
  const q = (p: number) => sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)] ?? Number.NaN;
  return {
    count: sorted.length,
    p50: q(0.5),
    p99: q(0.99),
    max: sorted[sorted.length - 1] ?? Number.NaN,
  };
}

/** The arithmetic mean, NaN for no values. */
export function mean(values: readonly number[]): number {
  return values.length === 0 ? Number.NaN : values.reduce((a, b) => a + b, 0) / values.length;
}

/** Resolves after `ms` (at once for a negative wait). */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}
