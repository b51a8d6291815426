import { mkdir, writeFile } from "node:fs/promises";
import { availableParallelism, cpus } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

/** Where results and profiles are written (git-ignored). */
export const RESULTS = join(dirname(fileURLToPath(import.meta.url)), "..", "results");

/** `started` as it appears in result and profile file names. */
export function runStamp(started: Date): string {
  return started.toISOString().replace(/[:.]/g, "-");
}

/**
 * Writes `bench/results/<benchmark>-<stamp>.json`: the machine (Node, CPU model, cores)
 * and when the run started, then the benchmark's own `fields`. Returns the path relative
 * to the working directory, for the closing "results:" line.
 */
export async function writeResults(
  benchmark: string,
  started: Date,
  fields: Record<string, unknown>,
): Promise<string> {
  await mkdir(RESULTS, { recursive: true });
  const file = join(RESULTS, `${benchmark}-${runStamp(started)}.json`);
  const record = {
    benchmark,
    startedAt: started.toISOString(),
    node: process.version,
    cpu: cpus()[0]?.model,
    cpus: availableParallelism(),
    ...fields,
  };
  await writeFile(file, `${JSON.stringify(record, null, 2)}\n`);
  return relative(process.cwd(), file);
}

/** The banner for figures that are not valid: a headline, then one line per reason. */
export function printProblems(
  say: (line: string) => void,
  headline: string,
  lines: readonly string[],
): void {
  if (lines.length === 0) return;
  say("!".repeat(78));
  say(`!!  ${headline}`);
  for (const line of lines) say(`!!  ${line}`);
  say("!".repeat(78));
}

/** What made the figures less reliable (a busy machine), when anything did. */
export function printWarnings(say: (line: string) => void, warnings: readonly string[]): void {
  if (warnings.length === 0) return;
  say("??  WARNINGS (a busy machine makes the figures unreliable):");
  for (const w of warnings) say(`??  ${w}`);
}
