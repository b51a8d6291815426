import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import { seedStock } from "../src/seed.js";
import {
  createInventoryFixture,
  decodeEvent,
  type InventoryFixture,
  uniqueSku,
} from "./support/inventory-fixture.js";

let f: InventoryFixture;

before(async () => {
  f = await createInventoryFixture("inventory_seed");
});
after(() => f?.close());

test("seedStock creates missing records only, each with a StockLevelChanged", async () => {
  const admined = await f.product(3);
  const takenSku = uniqueSku("TKN");
  await f.product(1, takenSku);
  const fresh = { productId: randomUUID(), sku: uniqueSku("NEW"), onHand: 25n };
  const mark = await f.outboxMark();
  const created = await seedStock(f.store, [
    fresh,
    { productId: admined, onHand: 100n },
    { productId: randomUUID(), sku: takenSku, onHand: 100n },
  ]);
  assert.equal(created, 1);
  assert.equal((await f.stock(admined)).on_hand, 3n, "an existing record is left alone");
  const row = await f.stock(fresh.productId);
  assert.deepEqual([row.sku, row.on_hand, row.reserved], [fresh.sku, 25n, 0n]);
  const events = (await f.outboxSince(mark)).map(decodeEvent);
  assert.equal(events.length, 1);
  const [event] = events;
  assert.ok(event?.$typeName === "meshmart.inventory.v1.StockLevelChanged");
  assert.equal(event.productId, fresh.productId);
  assert.equal(await seedStock(f.store, [fresh]), 0, "seeding again creates nothing");
});
