import type { Logger } from "@meshmart/kit";
import type { InventoryStore, NewStock } from "./store.js";

/**
 * Gives products their first stock: a record is created only for a product id (or SKU)
 * inventory has no record of, so a restart, a second replica or a repeated seed never
 * overwrites stock an admin set or reservations moved. Each created record publishes
 * StockLevelChanged. Returns how many were created. Inventory does not know the catalog;
 * whoever seeds (the local `make up`) passes the products.
 */
export async function seedStock(
  store: InventoryStore,
  items: readonly NewStock[],
  logger?: Logger,
): Promise<number> {
  const created = await store.insertMissing(items);
  if (created.length > 0) {
    logger?.info({ created: created.length, total: items.length }, "stock seeded");
  }
  return created.length;
}
