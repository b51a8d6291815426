import type { z } from "zod";
import { ConfigError, loadConfig } from "./config.js";

/** Something that runs until closed. */
export interface Closable {
  close(): Promise<void>;
}

/**
 * A service's `main`: validate config (exit 1 with the list of bad variables), start,
 * and on SIGTERM/SIGINT close gracefully and exit 0. A second signal, or a close that
 * outlives the grace period by 5 s, exits at once with 1. Anything thrown at start
 * exits 1 with the reason on stderr.
 */
export function runMain<S extends z.ZodType<{ SHUTDOWN_GRACE_MS: number }>>(
  schema: S,
  start: (config: z.infer<S>) => Promise<Closable>,
): void {
  let config: z.infer<S>;
  try {
    config = loadConfig(schema);
  } catch (reason) {
    if (reason instanceof ConfigError) {
      console.error(reason.message);
      process.exit(1);
    }
    throw reason;
  }
  let stopping = false;
  start(config).then(
    (running) => {
      const stop = (signal: NodeJS.Signals) => {
        if (stopping) {
          console.error(`${signal} again: exiting now`);
          process.exit(1);
        }
        stopping = true;
        const watchdog = setTimeout(() => {
          console.error("shutdown took too long: exiting");
          process.exit(1);
        }, config.SHUTDOWN_GRACE_MS + 5_000);
        watchdog.unref();
        running.close().then(
          () => process.exit(0),
          (reason: unknown) => {
            console.error("shutdown failed:", reason);
            process.exit(1);
          },
        );
      };
      process.on("SIGTERM", stop);
      process.on("SIGINT", stop);
    },
    (reason: unknown) => {
      console.error("failed to start:", reason instanceof Error ? reason.message : reason);
      process.exit(1);
    },
  );
}
