/**
 * Shared by the benchmark's server entries: each runs in its own child process, pinned
 * by the runner (`taskset -c 1`), prints one JSON line on stdout when it is ready and,
 * on SIGTERM, closes, prints one JSON line of final counters and exits 0 (so
 * `--cpu-prof` profiles are written).
 */
import { openSync } from "node:fs";
import { createLogDestination } from "@meshmart/kit";
import type { DestinationStream } from "pino";
import { benchAccessLog } from "../../lib/env.js";

/**
 * Where the servers' logs go: /dev/null through pino's own asynchronous SonicBoom
 * destination, the same kind production uses for stdout, so every access-log line is
 * really serialized and written (write(2) to a file descriptor), just not kept.
 */
export function devNullLogDestination(): DestinationStream {
  // The production destination (batched async writes), pointed at /dev/null.
  return createLogDestination(openSync("/dev/null", "w"));
}

/**
 * The settings every bench server starts with, as the cluster deploys a service: free
 * ports, LOG_LEVEL (BENCH_LOG_LEVEL, default info) and ACCESS_LOG ({@link benchAccessLog}:
 * failed and slow calls logged, successes left to the sidecar's access log).
 */
export function serverSettings(serviceName: string): Record<string, string> {
  return {
    SERVICE_NAME: serviceName,
    GRPC_PORT: "0",
    HTTP_PORT: "0",
    ADMIN_PORT: "0",
    LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? "info",
    ACCESS_LOG: benchAccessLog(),
  };
}

/** The ready line the runner waits for. */
export function announceReady(ports: Record<string, number>): void {
  process.stdout.write(`${JSON.stringify({ ready: true, pid: process.pid, ...ports })}\n`);
}

/**
 * Peak of each process.memoryUsage() field, sampled every 250 ms (a cheap read), so
 * the runner can tell V8 heap from the rest of the RSS.
 */
const peakMemory = { rss: 0, heapTotal: 0, heapUsed: 0, external: 0, arrayBuffers: 0 };
const memoryTimer = setInterval(() => {
  const m = process.memoryUsage();
  for (const k of Object.keys(peakMemory) as (keyof typeof peakMemory)[])
    peakMemory[k] = Math.max(peakMemory[k], m[k]);
}, 250);
memoryTimer.unref();

function memoryMb(m: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(m).map(([k, v]) => [k, Math.round(v / 104857.6) / 10]));
}

/**
 * On SIGTERM/SIGINT: close, print the final counters (and peak/final memory, in MB) as
 * one JSON line, exit 0.
 */
export function stopOnSignal(close: () => Promise<Record<string, unknown>>): void {
  let stopping = false;
  const stop = () => {
    if (stopping) process.exit(1);
    stopping = true;
    const watchdog = setTimeout(() => process.exit(1), 15_000);
    watchdog.unref();
    close().then(
      (counters) => {
        const memory: Record<string, unknown> = {
          peakMb: memoryMb(peakMemory),
          finalMb: memoryMb({ ...process.memoryUsage() }),
        };
        // With --expose-gc (BENCH_NODE_FLAGS): what is still live after a full collection.
        const gc = (globalThis as { gc?: () => void }).gc;
        if (gc !== undefined) {
          gc();
          memory.afterGcMb = memoryMb({ ...process.memoryUsage() });
        }
        process.stdout.write(`${JSON.stringify({ stopped: true, ...counters, memory })}\n`, () =>
          process.exit(0),
        );
      },
      (reason: unknown) => {
        console.error("bench server: close failed:", reason);
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

/** Exits 1 with the reason when a server entry fails to start. */
export function failStart(reason: unknown): never {
  console.error("bench server: failed to start:", reason instanceof Error ? reason.stack : reason);
  process.exit(1);
}
