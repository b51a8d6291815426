import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ProductCreatedSchema } from "@meshmart/kit/gen/meshmart/catalog/v1/events_pb.js";
import { InventoryService } from "@meshmart/kit/gen/meshmart/inventory/v1/inventory_service_pb.js";
import {
  createTestDatabase,
  createTestIssuer,
  openTestEvents,
  rejection,
  type TestDatabase,
  type TestEvents,
  waitFor,
} from "@meshmart/kit/testing";
import { type RunningInventory, startTestInventory } from "./support/inventory-server.js";

// Inventory learns new products from catalog's ProductCreated: a stock record with the SKU
// and the configured initial units, created once however often the event arrives.
let db: TestDatabase;
let events: TestEvents;
let running: RunningInventory;

before(async () => {
  [db, events] = await Promise.all([
    createTestDatabase("inventory_subs"),
    openTestEvents("invsub"),
  ]);
  running = await startTestInventory({
    databaseUrl: db.url,
    issuer: await createTestIssuer(),
    env: { ...events.env, INITIAL_STOCK_ON_PRODUCT_CREATED: "25" },
  });
});

after(async () => {
  await running?.stop();
  await events?.close();
  await db?.drop();
});

test("ProductCreated gives the product a stock record with its SKU and initial units", async () => {
  const client = createClient(
    InventoryService,
    createGrpcTransport({ baseUrl: `http://${running.host.grpcTarget}` }),
  );
  const productId = randomUUID();
  const sku = `SUB-${productId.slice(0, 6).toUpperCase()}`;
  const missing = await rejection(
    client.getStock({ key: { case: "productId", value: productId } }),
  );
  assert.equal(missing.code, 5);
  const event = { productId, product: { id: productId, sku, name: "Tamper", version: 1n } };
  const eventId = await events.publish(ProductCreatedSchema, event);
  const { stock } = await waitFor("the stock record", () =>
    client.getStock({ key: { case: "sku", value: sku } }),
  );
  assert.equal(stock?.productId, productId);
  assert.equal(stock?.onHand, 25n);
  // A reservation moves it; a redelivered ProductCreated must not reset it.
  await client.reserveStock({ orderId: randomUUID(), items: [{ productId, quantity: 5 }] });
  await events.publish(ProductCreatedSchema, { ...event, eventId });
  await events.publish(ProductCreatedSchema, event);
  await waitFor("both copies acknowledged", async () => {
    const info = await events.jsm.consumers.info(events.names.stream("catalog"), "inventory");
    return info.num_ack_pending === 0 && info.num_pending === 0;
  });
  const after = await client.getStock({ key: { case: "productId", value: productId } });
  assert.equal(after.stock?.onHand, 25n);
  assert.equal(after.stock?.available, 20n);
});
