import type { Logger } from "@meshmart/kit";
import { Counter, type Registry } from "prom-client";
import type { InventoryStore } from "./store.js";

/** Releases reservations nobody committed or released in time. */
export interface ReservationSweeper {
  /**
   * Releases every RESERVED reservation older than the TTL (batch by batch) through the
   * same store path as ReleaseReservation, so each publishes StockReleased. Resolves with
   * how many it released. Concurrent calls share one run.
   */
  sweepOnce(): Promise<number>;
  /** Sweeps every interval until {@link stop}. */
  start(): void;
  /** Stops the timer and waits for a sweep in progress. */
  stop(): Promise<void>;
}

/** Options of {@link createReservationSweeper}. */
export interface SweeperOptions {
  store: InventoryStore;
  /** Age after which a RESERVED reservation is released. */
  ttlMs: number;
  intervalMs: number;
  /** Reservations released per query round. */
  batchSize?: number;
  logger: Logger;
  registry: Registry;
}

/**
 * The expiry sweeper. A saga that died between ReserveStock and its next step would hold
 * stock forever; once orders resumes it, its CommitReservation finds the reservation
 * released and the order is cancelled. Replicas may sweep at the same time: each release
 * locks the reservation row, and the second finds it released and does nothing.
 */
export function createReservationSweeper(options: SweeperOptions): ReservationSweeper {
  const { store, ttlMs, intervalMs, logger } = options;
  const batchSize = options.batchSize ?? 100;
  const expired = new Counter({
    name: "inventory_reservations_expired_total",
    help: "Reservations released by the expiry sweeper because they outlived the TTL.",
    registers: [options.registry],
  });
  const failures = new Counter({
    name: "inventory_reservation_sweeps_failed_total",
    help: "Sweeper runs that failed (the next run retries).",
    registers: [options.registry],
  });
  let running: Promise<number> | undefined;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;

  async function sweep(): Promise<number> {
    let released = 0;
    for (;;) {
      const orderIds = await store.listExpired(ttlMs, batchSize);
      for (const orderId of orderIds) {
        const outcome = await store.release(orderId);
        // Committed or released meanwhile: the saga got there first, nothing to expire.
        if (outcome.kind === "released" && outcome.unitsReleased) {
          released++;
          expired.inc();
          logger.info({ order_id: orderId, ttl_ms: ttlMs }, "expired reservation released");
        }
      }
      if (orderIds.length < batchSize) return released;
    }
  }

  const sweepOnce = () => {
    running ??= sweep().finally(() => {
      running = undefined;
    });
    return running;
  };

  const schedule = () => {
    if (stopped) return;
    timer = setTimeout(() => {
      sweepOnce()
        .catch((reason: unknown) => {
          failures.inc();
          logger.error({ err: reason }, "reservation sweep failed");
        })
        .finally(schedule);
    }, intervalMs);
    // The sweeper never keeps the process alive on its own.
    timer.unref();
  };

  return {
    sweepOnce,
    start() {
      stopped = false;
      if (timer === undefined) schedule();
    },
    async stop() {
      stopped = true;
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      await running?.catch(() => {});
    },
  };
}
