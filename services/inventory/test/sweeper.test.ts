import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { Code } from "@connectrpc/connect";
import { createLogger } from "@meshmart/kit";
import { ReservationStatus } from "@meshmart/kit/gen/meshmart/inventory/v1/inventory_pb.js";
import { createLogSink } from "@meshmart/kit/testing";
import { Registry } from "prom-client";
import { createReservationSweeper, type SweeperOptions } from "../src/sweeper.js";
import {
  createInventoryFixture,
  decodeEvent,
  type InventoryFixture,
  rejection,
} from "./support/inventory-fixture.js";

// The expiry sweeper against a real database: reservations are aged by moving their
// created_at back, so no test waits for a real TTL.
let f: InventoryFixture;

before(async () => {
  f = await createInventoryFixture("inventory_sweeper");
});
after(() => f?.close());

const TTL_MS = 15 * 60_000;

function sweeper(overrides: Partial<SweeperOptions> = {}) {
  const logs = createLogSink();
  const registry = new Registry();
  const s = createReservationSweeper({
    store: f.store,
    ttlMs: TTL_MS,
    intervalMs: 60_000,
    logger: createLogger({ service: "inventory", level: "debug", destination: logs.stream }),
    registry,
    ...overrides,
  });
  return { sweeper: s, logs, registry };
}

async function reserve(productId: string, quantity: number, ageMs: number): Promise<string> {
  const orderId = randomUUID();
  await f.client.reserveStock({ orderId, items: [{ productId, quantity }] });
  await f.sql`
    update reservations set created_at = now() - ${String(ageMs)}::bigint * interval '1 millisecond'
    where order_id = ${orderId}`;
  return orderId;
}

const statusOf = async (orderId: string) =>
  (await f.client.getReservation({ orderId })).reservation?.status;

describe("reservation sweeper", () => {
  test("releases only RESERVED reservations older than the TTL, publishing StockReleased", async () => {
    const productId = await f.product(20);
    const old = await reserve(productId, 2, TTL_MS + 60_000);
    const fresh = await reserve(productId, 3, TTL_MS - 60_000);
    const oldCommitted = await reserve(productId, 4, TTL_MS * 4);
    await f.client.commitReservation({ orderId: oldCommitted });
    const oldReleased = await reserve(productId, 5, TTL_MS * 4);
    await f.client.releaseReservation({ orderId: oldReleased });
    const before = await f.stock(productId);
    assert.deepEqual([before.on_hand, before.reserved], [16n, 5n]);

    const mark = await f.outboxMark();
    const { sweeper: s, logs, registry } = sweeper();
    assert.equal(await s.sweepOnce(), 1);

    assert.equal(await statusOf(old), ReservationStatus.RELEASED);
    assert.equal(await statusOf(fresh), ReservationStatus.RESERVED);
    assert.equal(await statusOf(oldCommitted), ReservationStatus.COMMITTED);
    const row = await f.stock(productId);
    assert.deepEqual([row.on_hand, row.reserved], [16n, 3n], "the old units are available again");

    const events = await f.outboxSince(mark);
    assert.deepEqual(
      events.map((e) => e.event_type),
      ["meshmart.inventory.v1.StockReleased", "meshmart.inventory.v1.StockLevelChanged"],
    );
    const released = decodeEvent(events[0] ?? assert.fail("no event"));
    assert.ok(released.$typeName === "meshmart.inventory.v1.StockReleased");
    assert.equal(released.orderId, old);
    assert.deepEqual(
      released.items.map((i) => [i.productId, i.quantity]),
      [[productId, 2]],
    );
    assert.ok(
      logs.lines().some((l) => l.msg === "expired reservation released" && l.order_id === old),
    );
    assert.match(await registry.metrics(), /inventory_reservations_expired_total 1/);

    // Nothing left to expire; the saga's late commit is refused.
    assert.equal(await s.sweepOnce(), 0);
    const late = await rejection(f.client.commitReservation({ orderId: old }));
    assert.equal(late.code, Code.FailedPrecondition);
  });

  test("works through more expired reservations than one batch", async () => {
    const productId = await f.product(10);
    const orders = [];
    for (let i = 0; i < 5; i++) orders.push(await reserve(productId, 1, TTL_MS * 2));
    const { sweeper: s } = sweeper({ batchSize: 2 });
    assert.equal(await s.sweepOnce(), 5);
    for (const orderId of orders) assert.equal(await statusOf(orderId), ReservationStatus.RELEASED);
    assert.equal((await f.stock(productId)).reserved, 0n);
  });

  test("two sweepers at once release each reservation once", async () => {
    const productId = await f.product(10);
    for (let i = 0; i < 6; i++) await reserve(productId, 1, TTL_MS * 2);
    const mark = await f.outboxMark();
    const [a, b] = [sweeper({ batchSize: 2 }).sweeper, sweeper({ batchSize: 2 }).sweeper];
    const [na, nb] = await Promise.all([a.sweepOnce(), b.sweepOnce()]);
    assert.equal(na + nb, 6);
    const released = (await f.outboxSince(mark)).filter(
      (e) => e.event_type === "meshmart.inventory.v1.StockReleased",
    );
    assert.equal(released.length, 6);
    assert.equal((await f.stock(productId)).reserved, 0n);
  });

  test("started, it sweeps on its interval; stopped, it sweeps no more", async () => {
    const productId = await f.product(10);
    const { sweeper: s } = sweeper({ intervalMs: 20 });
    s.start();
    try {
      const orderId = await reserve(productId, 1, TTL_MS * 2);
      const deadline = Date.now() + 5_000;
      while ((await statusOf(orderId)) !== ReservationStatus.RELEASED) {
        assert.ok(Date.now() < deadline, "released within 5 s");
        await new Promise((r) => setTimeout(r, 20));
      }
    } finally {
      await s.stop();
    }
    const later = await reserve(productId, 1, TTL_MS * 2);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(await statusOf(later), ReservationStatus.RESERVED);
  });
});
