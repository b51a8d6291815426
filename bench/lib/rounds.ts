/**
 * How the bench runners measure several targets fairly on a machine whose speed drifts: a
 * warm-up per target, then rounds that alternate the targets, so drift lands on all of
 * them instead of on one ratio.
 */

/** One target's warm-up run and its measured rounds. */
export interface AlternatedRuns<T extends string, R> {
  warm: Map<T, R>;
  rounds: Map<T, R[]>;
}

/** Options for {@link alternateRounds}. */
export interface AlternateOptions<T extends string, R> {
  targets: readonly T[];
  warmupSeconds: number;
  rounds: number;
  roundSeconds: number;
  /** One run of `target` for `seconds`; `round` is undefined for the warm-up. */
  run(target: T, seconds: number, round: number | undefined): Promise<R>;
  /** req/s of a run, for the progress lines. */
  reqPerSec(run: R): number;
  /** A target's name in the progress lines (default: the target). */
  label?(target: T): string;
  say(line: string): void;
}

/** Warm-up each target, then `rounds` rounds over all targets in turn. */
export async function alternateRounds<T extends string, R>(
  o: AlternateOptions<T, R>,
): Promise<AlternatedRuns<T, R>> {
  const label = o.label ?? ((t: T) => t);
  const warm = new Map<T, R>();
  for (const target of o.targets) {
    process.stdout.write(`${label(target)}: warm-up ${o.warmupSeconds} s… `);
    const run = await o.run(target, o.warmupSeconds, undefined);
    warm.set(target, run);
    o.say(`${Math.round(o.reqPerSec(run))} req/s`);
  }
  const rounds = new Map<T, R[]>(o.targets.map((t) => [t, []]));
  for (let round = 1; round <= o.rounds; round++) {
    const line: string[] = [];
    for (const target of o.targets) {
      const run = await o.run(target, o.roundSeconds, round);
      rounds.get(target)?.push(run);
      line.push(`${target} ${Math.round(o.reqPerSec(run))}`);
    }
    o.say(`round ${round}/${o.rounds}: ${line.join(", ")} req/s`);
  }
  return { warm, rounds };
}
