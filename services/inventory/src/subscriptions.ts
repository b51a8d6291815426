import { type EventHandler, onEvent } from "@meshmart/kit";
import { ProductCreatedSchema } from "@meshmart/kit/gen/meshmart/catalog/v1/events_pb.js";
import type { InventoryStore } from "./store.js";

/** The durable consumer inventory reads catalog's events with; also its inbox key. */
export const CONSUMER = "inventory";

/**
 * Inventory learns about products from catalog: a new product gets a stock record with
 * its SKU (so GetStock by SKU works at once) and `initialStock` units (the local demo; a
 * deployment leaves this off and sets stock through SetStock). An existing record is
 * never touched, so a redelivered or replayed event changes nothing.
 */
export function createSubscriptions(store: InventoryStore, initialStock: bigint): EventHandler[] {
  return [
    onEvent(ProductCreatedSchema, async (tx, event) => {
      await store.insertMissing(
        [
          {
            productId: event.productId,
            ...(event.product?.sku ? { sku: event.product.sku } : {}),
            onHand: initialStock,
          },
        ],
        tx,
      );
    }),
  ];
}
