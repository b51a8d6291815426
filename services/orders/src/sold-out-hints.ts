/** A product found short, and of how much. */
export interface Shortage {
  productId: string;
  /** Units inventory had available when it refused. */
  available: bigint;
}

/**
 * What orders remembers of inventory's recent refusals: per product, the units it said
 * were available. In a flash sale every order after the last unit asks inventory and is
 * refused; with the hint, the orders that want more than that are cancelled out of stock
 * without the call. After `windowMs` one order asks inventory again (a probe) while the
 * others still go by the hint; the probe's refusal renews it, its reservation clears it,
 * and a probe not answered within another `windowMs` is followed by the next one. So a
 * product is called about once per window however many orders want it, instead of once per
 * order, which under load also kept the hint from ever being current: the calls take
 * longer than the window.
 *
 * The consistency it trades: units that come back (a reservation released after a
 * declined payment, a restock) are offered once the next probe finds them, up to a window
 * and a call later. A window of 0 turns the hints off.
 */
export interface SoldOutHints {
  /**
   * The first item the hints say cannot be had, if any; undefined also when this order is
   * to ask inventory (the probe). An order is screened twice (as it is placed, and when
   * its reservation step runs): given its id, a probe it was granted stays its own.
   */
  shortage(
    items: readonly { productId: string; quantity: number }[],
    orderId?: string,
  ): Shortage | undefined;
  /** Inventory refused an order for lack of `productId`, having `available` units. */
  refused(productId: string, available: bigint): void;
  /** Inventory reserved these products for an order: there was stock after all. */
  reserved(productIds: readonly string[]): void;
}

/** At most this many products are remembered; the oldest hint goes first. */
const MAX_PRODUCTS = 10_000;

interface Hint {
  available: bigint;
  /** When inventory said so. */
  at: number;
  /** When the order asking inventory again was let through, if one was. */
  probeAt: number | undefined;
  /** Which order that was. */
  probeOrder: string | undefined;
}

/** Hints kept in this process for `windowMs` (0: none), read with `now` (tests pass a clock). */
export function createSoldOutHints(windowMs: number, now: () => number = Date.now): SoldOutHints {
  // Insertion order is refusal order (a renewed hint is re-inserted), so the first entry is
  // always the oldest.
  const hints = new Map<string, Hint>();
  return {
    shortage(items, orderId) {
      if (windowMs <= 0 || hints.size === 0) return undefined;
      const t = now();
      for (const { productId, quantity } of items) {
        const hint = hints.get(productId);
        if (hint === undefined || BigInt(quantity) <= hint.available) continue;
        if (orderId !== undefined && hint.probeOrder === orderId) continue;
        if (
          t - hint.at >= windowMs &&
          (hint.probeAt === undefined || t - hint.probeAt >= windowMs)
        ) {
          hint.probeAt = t;
          hint.probeOrder = orderId;
          return undefined;
        }
        return { productId, available: hint.available };
      }
      return undefined;
    },
    refused(productId, available) {
      if (windowMs <= 0) return;
      hints.delete(productId);
      hints.set(productId, { available, at: now(), probeAt: undefined, probeOrder: undefined });
      if (hints.size > MAX_PRODUCTS) {
        const oldest = hints.keys().next();
        if (oldest.done !== true) hints.delete(oldest.value);
      }
    },
    reserved(productIds) {
      for (const id of productIds) hints.delete(id);
    },
  };
}
