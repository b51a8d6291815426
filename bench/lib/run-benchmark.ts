/**
 * Runs a benchmark's `main`, then `cleanup` exactly once — after success, after a failure
 * (exit 1) or on Ctrl-C / SIGTERM (exit 130; a second signal exits at once) — and exits,
 * so helpers started for the run (Postgres, Redis, servers) stop with it.
 */
export async function runBenchmark(
  main: () => Promise<void>,
  cleanup: () => Promise<void>,
): Promise<never> {
  let cleaning: Promise<void> | undefined;
  const cleanOnce = () => {
    cleaning ??= cleanup().catch((reason: unknown) => {
      console.error("cleanup failed:", reason instanceof Error ? reason.message : reason);
    });
    return cleaning;
  };
  let interrupted = false;
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => {
      if (interrupted) process.exit(130);
      interrupted = true;
      console.error(`${signal}: stopping what this run started`);
      void cleanOnce().finally(() => process.exit(130));
    });
  }
  try {
    await main();
  } catch (reason) {
    console.error("benchmark failed:", reason instanceof Error ? reason.stack : reason);
    process.exitCode = 1;
  } finally {
    await cleanOnce();
  }
  process.exit();
}
