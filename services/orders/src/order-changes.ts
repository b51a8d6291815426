/**
 * In-process signal that an order changed, for RPCs that wait on one (CancelOrder,
 * WatchOrder). It only speeds things up: another replica's saga worker may be the one
 * moving the order, so waiters also look again after a poll interval.
 */
export interface OrderChanges {
  notify(orderId: string): void;
  /** Resolves on the next change of the order, after `ms`, or when `signal` aborts. */
  wait(orderId: string, ms: number, signal?: AbortSignal): Promise<void>;
}

/** A fresh notifier. */
export function createOrderChanges(): OrderChanges {
  const waiters = new Map<string, Set<() => void>>();
  return {
    notify(orderId) {
      const set = waiters.get(orderId);
      if (set === undefined) return;
      waiters.delete(orderId);
      for (const wake of set) wake();
    },
    wait(orderId, ms, signal) {
      return new Promise<void>((resolve) => {
        if (signal?.aborted) {
          resolve();
          return;
        }
        const done = () => {
          clearTimeout(timer);
          signal?.removeEventListener("abort", done);
          waiters.get(orderId)?.delete(done);
          if (waiters.get(orderId)?.size === 0) waiters.delete(orderId);
          resolve();
        };
        const timer = setTimeout(done, Math.max(0, ms));
        signal?.addEventListener("abort", done, { once: true });
        let set = waiters.get(orderId);
        if (set === undefined) {
          set = new Set();
          waiters.set(orderId, set);
        }
        set.add(done);
      });
    },
  };
}
