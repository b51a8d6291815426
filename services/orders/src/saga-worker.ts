import { inStoredTrace, type Logger, untraced } from "@meshmart/kit";
import { Counter, Gauge, type Registry } from "prom-client";
import type { Decide } from "./saga.js";
import type { ClaimedSaga, OrderRecord, OrdersStore, SagaRow } from "./store.js";

/** The saga executor inside an orders replica. */
export interface SagaWorker {
  /** Starts polling for due sagas. */
  start(): void;
  /** Looks for due sagas now (an order was cancelled). */
  wake(): void;
  /**
   * Runs the first step of a saga its caller claimed (PlaceOrder, which created it) at
   * once, outside the worker's slots, and goes on with the next steps in a slot if one is
   * free, else leaves them due. Resolves when that first step is recorded: with the order
   * as committed when it became terminal (an order that cannot get its stock), else
   * undefined.
   */
  adopt(claimed: ClaimedSaga): Promise<OrderRecord | undefined>;
  /** Counts and logs an order that was terminal when it was placed (refused as sold out). */
  finishedAtPlacement(record: OrderRecord): void;
  /**
   * Stops claiming, lets the steps in flight finish and record their results (each is
   * bounded by its deadline) and leaves whatever comes next due for any replica.
   */
  stop(): Promise<void>;
}

/** What the worker needs. */
export interface SagaWorkerOptions {
  store: OrdersStore;
  /** Runs one step of a claimed saga (saga.ts's runStep with its dependencies). */
  runStep(saga: SagaRow, record: OrderRecord): Promise<Decide>;
  /**
   * Called after a recorded step changed the order as clients see it (terminal, or its
   * payment recorded), so waiting CancelOrder / WatchOrder calls look again; with the
   * order as committed when it became terminal.
   */
  onChange(orderId: string, terminal?: OrderRecord): void;
  logger: Logger;
  registry: Registry;
  /** Sagas driven at once. */
  concurrency: number;
  pollMs: number;
  leaseMs: number;
}

/** Whether a driven saga holds one of the worker's slots. */
interface Slot {
  held: boolean;
}

/**
 * Drives sagas to their end. Each replica claims due sagas in batches (`for update skip
 * locked`, so two replicas never claim the same one) under a lease, runs a step, and
 * records its result and claims the next step in one transaction, step after step, until
 * the saga waits for a retry or finishes. A replica that dies mid-step loses nothing: its
 * claims lapse after the lease and any replica resumes them from the recorded step.
 */
export function createSagaWorker(options: SagaWorkerOptions): SagaWorker {
  const { store, logger, concurrency, pollMs, leaseMs } = options;
  const steps = new Counter({
    name: "orders_saga_steps_total",
    help: "Saga steps run, by step and what followed (next, retry, confirm, cancel, lost).",
    labelNames: ["step", "transition"] as const,
    registers: [options.registry],
  });
  const finished = new Counter({
    name: "orders_finished_total",
    help: "Orders that reached a terminal status, by status and cancel code.",
    labelNames: ["status", "cancel_code"] as const,
    registers: [options.registry],
  });
  const inFlightGauge = new Gauge({
    name: "orders_sagas_in_flight",
    help: "Sagas this replica is driving now.",
    registers: [options.registry],
  });

  const countFinished = ({ order: done }: OrderRecord) => {
    finished.inc({ status: done.status, cancel_code: done.cancel_code });
    logger.info(
      { orderId: done.id, status: done.status, cancelCode: done.cancel_code || undefined },
      "order finished",
    );
  };

  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  /** Slots taken (at most `concurrency`). */
  let inFlight = 0;
  /** Sagas being driven, adopted ones included. */
  let active = 0;
  let pumping: Promise<void> | undefined;
  let pumpAgain = false;
  // The last claim filled every free slot: more may be due, so a freed slot claims again.
  let backlog = false;
  let pollFailing = false;
  let drained: (() => void) | undefined;

  function hold(slot: Slot): void {
    inFlight++;
    inFlightGauge.inc();
    slot.held = true;
  }

  /** A slot for a saga driven outside the slots (adopted), if one is free. */
  function takeSlot(slot: Slot): boolean {
    if (slot.held) return true;
    if (inFlight >= concurrency) {
      backlog = true;
      return false;
    }
    hold(slot);
    return true;
  }

  async function drive(
    first: ClaimedSaga,
    slot: Slot,
    onFirstStep?: (terminal: OrderRecord | undefined) => void,
  ): Promise<void> {
    let saga = first.saga;
    let record: OrderRecord | undefined = first.record;
    let reported = onFirstStep;
    const report = (terminal?: OrderRecord) => {
      reported?.(terminal);
      reported = undefined;
    };
    try {
      for (;;) {
        record ??= await store.get(saga.order_id);
        if (record === undefined) {
          logger.error({ orderId: saga.order_id }, "saga without an order");
          return;
        }
        const token = saga.claim_token;
        if (token === null) return;
        const current = saga;
        const order = record;
        // Each step is a span of the order's trace (the PlaceOrder call's, stored with the
        // saga), however much later and in whichever replica it runs: its calls and the
        // events its result writes continue that trace too.
        const outcome = await inStoredTrace(
          current.trace_context,
          `saga ${current.step}`,
          {
            "meshmart.order.id": current.order_id,
            "meshmart.saga.step": current.step,
            "meshmart.saga.attempt": current.attempts,
          },
          async (span) => {
            const decide = await options.runStep(current, order);
            const recorded = await store.record(current.order_id, token, decide, {
              leaseMs,
              // An adopted saga keeps its claim only in a free slot; a step that ends the
              // saga or waits for a retry gives the slot back at once (launch).
              keepClaim: !stopped && takeSlot(slot),
              known: current,
              order,
            });
            span.setAttribute(
              "meshmart.saga.transition",
              recorded.kind === "lost" ? "lost" : recorded.transition,
            );
            return recorded;
          },
        );
        steps.inc({
          step: current.step,
          transition: outcome.kind === "lost" ? "lost" : outcome.transition,
        });
        if (outcome.kind === "lost") {
          logger.warn(
            { orderId: current.order_id, step: current.step },
            "saga claim lapsed before the step finished; its result was dropped",
          );
          return;
        }
        // Only what a client can see wakes the waiters (WatchOrder, CancelOrder): the order
        // becoming terminal or getting its payment. A step that moved only the saga would
        // have every watcher re-read an unchanged order (three times per order in a flash
        // sale, for as many watchers as orders).
        if (
          outcome.kind === "finished" ||
          (outcome.kind === "claimed" && outcome.saga.payment_id !== current.payment_id) ||
          (outcome.kind === "parked" && outcome.transition !== "retry")
        ) {
          options.onChange(
            current.order_id,
            outcome.kind === "finished" ? outcome.record : undefined,
          );
        }
        report(outcome.kind === "finished" ? outcome.record : undefined);
        if (outcome.kind === "finished") {
          countFinished(outcome.record);
          return;
        }
        if (outcome.kind === "parked") return;
        saga = outcome.saga;
      }
    } catch (reason) {
      // Most likely the database; the claim lapses and the step runs again (it is idempotent).
      logger.error(
        { err: reason, orderId: saga.order_id, step: saga.step },
        "saga step could not be recorded; it resumes when its claim lapses",
      );
    } finally {
      report();
    }
  }

  function launch(
    claimed: ClaimedSaga,
    slot: Slot,
    onFirstStep?: (terminal: OrderRecord | undefined) => void,
  ): void {
    active++;
    void drive(claimed, slot, onFirstStep).finally(() => {
      active--;
      if (slot.held) {
        inFlight--;
        inFlightGauge.dec();
      }
      if (stopped) {
        if (active === 0) drained?.();
      } else if (backlog) {
        pump();
      }
    });
  }

  async function claimRounds(): Promise<void> {
    do {
      pumpAgain = false;
      const free = concurrency - inFlight;
      if (free <= 0) {
        backlog = true;
        return;
      }
      let claimed: ClaimedSaga[];
      try {
        claimed = await store.claimDue(free, leaseMs);
        if (pollFailing) logger.info("saga polling works again");
        pollFailing = false;
      } catch (reason) {
        // Logged once per outage, not every poll.
        if (!pollFailing) logger.error({ err: reason }, "cannot claim due sagas");
        pollFailing = true;
        return;
      }
      backlog = claimed.length === free;
      for (const saga of claimed) {
        const slot: Slot = { held: false };
        hold(slot);
        launch(saga, slot);
      }
    } while ((pumpAgain || backlog) && !stopped && inFlight < concurrency);
  }

  function pump(): void {
    if (stopped) return;
    if (pumping !== undefined) {
      pumpAgain = true;
      return;
    }
    // Polls are no one's trace; each claimed step joins its order's (drive).
    pumping = untraced(claimRounds).finally(() => {
      pumping = undefined;
    });
  }

  return {
    start() {
      if (timer !== undefined || stopped) return;
      timer = setInterval(pump, pollMs);
      pump();
    },
    wake() {
      pump();
    },
    adopt(claimed) {
      // As many at once as PlaceOrder calls are in flight (each waits for its own), which
      // the server and the mesh already bound; detached from the call's context: the steps
      // are the order's work, not the call's.
      return new Promise((resolve) => untraced(() => launch(claimed, { held: false }, resolve)));
    },
    finishedAtPlacement: countFinished,
    async stop() {
      stopped = true;
      if (timer !== undefined) clearInterval(timer);
      timer = undefined;
      await pumping;
      if (active > 0) {
        await new Promise<void>((resolve) => {
          drained = resolve;
        });
      }
    },
  };
}
