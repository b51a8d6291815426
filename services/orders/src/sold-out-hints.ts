/** A product found short, and of how much. */
export interface Shortage {
  productId: string;
  /** Units inventory had available when it refused. */
  available: bigint;
}

/**
 * What orders remembers of inventory's recent refusals: per product, the units it said
 * were available, for `windowMs`. In a flash sale every order after the last unit asks
 * inventory and is refused; with the hint, the orders that want more than that within the
 * window are cancelled out of stock without the call, and one order after the window (or
 * any that wants no more than is left) asks again, refreshing it.
 *
 * The consistency it trades: units that come back within the window (a reservation
 * released after a declined payment, a restock) are not offered to the orders placed in
 * it; they were sold out as of at most `windowMs` ago. A reservation that succeeds clears
 * the product's hint at once. A window of 0 turns the hints off.
 */
export interface SoldOutHints {
  /** The first item the hints say cannot be had, if any. */
  shortage(items: readonly { productId: string; quantity: number }[]): Shortage | undefined;
  /** Inventory refused an order for lack of `productId`, having `available` units. */
  refused(productId: string, available: bigint): void;
  /** Inventory reserved these products for an order: there was stock after all. */
  reserved(productIds: readonly string[]): void;
}

/** At most this many products are remembered; the oldest hint goes first. */
const MAX_PRODUCTS = 10_000;

/** Hints kept in this process for `windowMs` (0: none), read with `now` (tests pass a clock). */
export function createSoldOutHints(windowMs: number, now: () => number = Date.now): SoldOutHints {
  // Insertion order is refusal order (a refreshed hint is re-inserted), so the first entry
  // is always the oldest.
  const hints = new Map<string, { available: bigint; at: number }>();
  return {
    shortage(items) {
      if (windowMs <= 0 || hints.size === 0) return undefined;
      const since = now() - windowMs;
      for (const { productId, quantity } of items) {
        const hint = hints.get(productId);
        if (hint === undefined) continue;
        if (hint.at < since) {
          hints.delete(productId);
          continue;
        }
        if (BigInt(quantity) > hint.available) return { productId, available: hint.available };
      }
      return undefined;
    },
    refused(productId, available) {
      if (windowMs <= 0) return;
      hints.delete(productId);
      hints.set(productId, { available, at: now() });
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
