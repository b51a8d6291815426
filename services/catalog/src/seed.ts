import { createHash } from "node:crypto";
import type { Logger } from "@meshmart/kit";
import { demoCatalog } from "./demo-catalog.js";
import type { CatalogStore } from "./store.js";

/**
 * Loads the demo catalog once: products are keyed by SKU and inserted only when missing,
 * so restarts and concurrent replicas neither duplicate nor overwrite (an admin's edits
 * to a demo product survive). Ids derive from the SKU, so every machine gets the same ids.
 */
export async function seedDemoCatalog(store: CatalogStore, logger: Logger): Promise<number> {
  const products = demoCatalog().map((p) => ({ ...p, id: uuidFromSku(p.sku) }));
  const inserted = await store.insertMissing(products);
  if (inserted > 0) logger.info({ inserted, total: products.length }, "demo catalog seeded");
  return inserted;
}

/** A stable, version-8-shaped UUID from a SKU (RFC 9562 "custom" layout). */
export function uuidFromSku(sku: string): string {
  const h = createHash("sha256").update(`meshmart-demo:${sku}`).digest();
  h[6] = ((h[6] ?? 0) & 0x0f) | 0x80;
  h[8] = ((h[8] ?? 0) & 0x3f) | 0x80;
  const hex = h.subarray(0, 16).toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}
