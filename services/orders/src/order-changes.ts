import type { OrderRecord } from "./store.js";

/**
 * In-process signal that an order changed, for RPCs that wait on one (CancelOrder,
 * WatchOrder). It only speeds things up: another replica's saga worker may be the one
 * moving the order, so waiters also look again after a poll interval.
 */
export interface OrderChanges {
  /**
   * Wakes everyone listening for the order's next change (a notify with none listening is
   * dropped). `terminal`: the order as it was just committed terminal, when the notifier
   * has it (the saga worker that finished it), so waiters need not read it again.
   */
  notify(orderId: string, terminal?: OrderRecord): void;
  /**
   * Starts listening for the order's next change now. Listen before reading the order and
   * wait after: a change notified between the read and the wait is then not lost, it
   * ends the wait at once.
   */
  listen(orderId: string): ChangeListener;
}

/** One listen for an order's next change. */
export interface ChangeListener {
  /**
   * Resolves once the order changed since {@link OrderChanges.listen} (at once if it
   * already has), after `ms`, or when `signal` aborts; then stops listening. Resolves with
   * the order when the change was its terminal commit and the notifier passed it along.
   */
  wait(ms: number, signal?: AbortSignal): Promise<OrderRecord | undefined>;
  /** Stops listening without waiting (the caller is done with the order). */
  close(): void;
}

/** A fresh notifier. */
export function createOrderChanges(): OrderChanges {
  const listeners = new Map<string, Set<Listen>>();

  interface Listen {
    changed: boolean;
    terminal: OrderRecord | undefined;
    /** Set while someone waits on it. */
    wake: (() => void) | undefined;
  }

  function remove(orderId: string, listen: Listen): void {
    const set = listeners.get(orderId);
    if (set === undefined) return;
    set.delete(listen);
    if (set.size === 0) listeners.delete(orderId);
  }

  return {
    notify(orderId, terminal) {
      const set = listeners.get(orderId);
      if (set === undefined) return;
      listeners.delete(orderId);
      for (const listen of set) {
        listen.changed = true;
        listen.terminal ??= terminal;
        listen.wake?.();
      }
    },

    listen(orderId) {
      const listen: Listen = { changed: false, terminal: undefined, wake: undefined };
      let set = listeners.get(orderId);
      if (set === undefined) {
        set = new Set();
        listeners.set(orderId, set);
      }
      set.add(listen);
      return {
        wait(ms, signal) {
          if (listen.changed || signal?.aborted) {
            remove(orderId, listen);
            return Promise.resolve(listen.terminal);
          }
          return new Promise<OrderRecord | undefined>((resolve) => {
            const done = () => {
              clearTimeout(timer);
              signal?.removeEventListener("abort", done);
              listen.wake = undefined;
              remove(orderId, listen);
              resolve(listen.terminal);
            };
            const timer = setTimeout(done, Math.max(0, ms));
            signal?.addEventListener("abort", done, { once: true });
            listen.wake = done;
          });
        },
        close() {
          listen.wake?.();
          remove(orderId, listen);
        },
      };
    },
  };
}
