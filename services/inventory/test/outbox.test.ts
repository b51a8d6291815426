import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import {
  StockCommittedSchema,
  StockLevelChangedSchema,
  StockReleasedSchema,
  StockReservedSchema,
} from "@meshmart/kit/gen/meshmart/inventory/v1/events_pb.js";
import {
  createInventoryFixture,
  decodeEvent,
  type InventoryFixture,
  type OutboxRow,
  rejection,
} from "./support/inventory-fixture.js";

// Events go to the outbox in the transaction that makes the change: same rows commit
// together (one transaction id), and a refused change leaves no event behind.
let f: InventoryFixture;

before(async () => {
  f = await createInventoryFixture("inventory_outbox");
});
after(() => f?.close());

/** The transaction ids that wrote the outbox rows after `mark`. */
async function outboxXids(mark: bigint): Promise<string[]> {
  const rows = await f.sql<{ xid: string }[]>`
    select xmin::text as xid from event_outbox where seq > ${mark.toString()} order by seq`;
  return rows.map((r) => r.xid);
}

async function reservationXid(orderId: string): Promise<string> {
  const [row] = await f.sql<{ xid: string }[]>`
    select xmin::text as xid from reservations where order_id = ${orderId}`;
  assert.ok(row, "reservation row exists");
  return row.xid;
}

async function stockXid(productId: string): Promise<string> {
  const [row] = await f.sql<{ xid: string }[]>`
    select xmin::text as xid from stock_levels where product_id = ${productId}`;
  assert.ok(row, "stock row exists");
  return row.xid;
}

const types = (rows: OutboxRow[]) => rows.map((r) => r.event_type);

describe("outbox", () => {
  test("ReserveStock writes StockReserved and a StockLevelChanged per product, in its transaction", async () => {
    const [a, b] = [await f.product(5), await f.product(9)];
    const orderId = randomUUID();
    const mark = await f.outboxMark();
    await f.client.reserveStock({
      orderId,
      items: [
        { productId: a, quantity: 2 },
        { productId: b, quantity: 9 },
      ],
    });
    const rows = await f.outboxSince(mark);
    assert.deepEqual(types(rows), [
      "meshmart.inventory.v1.StockReserved",
      "meshmart.inventory.v1.StockLevelChanged",
      "meshmart.inventory.v1.StockLevelChanged",
    ]);
    assert.deepEqual(
      rows.map((r) => r.subject),
      [
        f.names.subjectOf(StockReservedSchema),
        f.names.subjectOf(StockLevelChangedSchema),
        f.names.subjectOf(StockLevelChangedSchema),
      ],
    );
    const [reserved, ...levels] = rows.map(decodeEvent);
    assert.ok(reserved?.$typeName === "meshmart.inventory.v1.StockReserved");
    assert.equal(reserved.orderId, orderId);
    assert.deepEqual(
      new Map(reserved.items.map((i) => [i.productId, i.quantity])),
      new Map([
        [a, 2],
        [b, 9],
      ]),
    );
    const after = new Map(
      levels.map((e) => {
        assert.ok(e.$typeName === "meshmart.inventory.v1.StockLevelChanged");
        return [e.productId, [e.stock?.onHand, e.stock?.reserved, e.stock?.available]];
      }),
    );
    assert.deepEqual(
      after,
      new Map([
        [a, [5n, 2n, 3n]],
        [b, [9n, 9n, 0n]],
      ]),
      "each level is the level after the change",
    );
    for (const [row, event] of rows.map((r) => [r, decodeEvent(r)] as const)) {
      assert.equal(row.event_id, event.eventId, "outbox key is the event's event_id");
      assert.ok(event.occurredAt, "occurred_at set");
    }
    const xid = await reservationXid(orderId);
    assert.deepEqual(
      await outboxXids(mark),
      [xid, xid, xid],
      "written by the reserving transaction",
    );
  });

  test("Release and Commit write their events in their transactions", async () => {
    const productId = await f.product(6);
    const released = randomUUID();
    const committed = randomUUID();
    await f.client.reserveStock({ orderId: released, items: [{ productId, quantity: 1 }] });
    await f.client.reserveStock({ orderId: committed, items: [{ productId, quantity: 2 }] });

    let mark = await f.outboxMark();
    await f.client.releaseReservation({ orderId: released });
    let rows = await f.outboxSince(mark);
    assert.deepEqual(types(rows), [StockReleasedSchema.typeName, StockLevelChangedSchema.typeName]);
    const release = decodeEvent(rows[0] as OutboxRow);
    assert.ok(release.$typeName === "meshmart.inventory.v1.StockReleased");
    assert.equal(release.orderId, released);
    assert.deepEqual(
      release.items.map((i) => [i.productId, i.quantity]),
      [[productId, 1]],
    );
    let xid = await reservationXid(released);
    assert.deepEqual(await outboxXids(mark), [xid, xid]);

    mark = await f.outboxMark();
    await f.client.commitReservation({ orderId: committed });
    rows = await f.outboxSince(mark);
    assert.deepEqual(types(rows), [
      StockCommittedSchema.typeName,
      StockLevelChangedSchema.typeName,
    ]);
    const commit = decodeEvent(rows[0] as OutboxRow);
    assert.ok(commit.$typeName === "meshmart.inventory.v1.StockCommitted");
    assert.deepEqual(
      commit.items.map((i) => [i.productId, i.quantity]),
      [[productId, 2]],
    );
    const level = decodeEvent(rows[1] as OutboxRow);
    assert.ok(level.$typeName === "meshmart.inventory.v1.StockLevelChanged");
    assert.deepEqual([level.stock?.onHand, level.stock?.reserved], [4n, 0n]);
    xid = await reservationXid(committed);
    assert.deepEqual(await outboxXids(mark), [xid, xid]);
  });

  test("SetStock writes StockLevelChanged in its transaction", async () => {
    const productId = randomUUID();
    const mark = await f.outboxMark();
    await f.client.setStock({ productId, onHand: 12n }, f.admin);
    const rows = await f.outboxSince(mark);
    assert.deepEqual(types(rows), [StockLevelChangedSchema.typeName]);
    const event = decodeEvent(rows[0] as OutboxRow);
    assert.ok(event.$typeName === "meshmart.inventory.v1.StockLevelChanged");
    assert.equal(event.productId, productId);
    assert.equal(event.stock?.available, 12n);
    const xid = await stockXid(productId);
    assert.deepEqual(await outboxXids(mark), [xid]);
  });

  test("a refused reservation writes no event", async () => {
    const [a, b] = [await f.product(5), await f.product(1)];
    const mark = await f.outboxMark();
    const orderId = randomUUID();
    // Short on b, after a was checked: everything the transaction did is rolled back.
    await rejection(
      f.client.reserveStock({
        orderId,
        items: [
          { productId: a, quantity: 5 },
          { productId: b, quantity: 2 },
        ],
      }),
    );
    // An unknown product.
    await rejection(
      f.client.reserveStock({
        orderId,
        items: [
          { productId: a, quantity: 1 },
          { productId: randomUUID(), quantity: 1 },
        ],
      }),
    );
    // A mismatch and a release-blocked retry.
    const held = randomUUID();
    await f.client.reserveStock({ orderId: held, items: [{ productId: a, quantity: 1 }] });
    const afterHeld = await f.outboxMark();
    await rejection(
      f.client.reserveStock({ orderId: held, items: [{ productId: a, quantity: 2 }] }),
    );
    const gone = randomUUID();
    await f.client.releaseReservation({ orderId: gone });
    await rejection(
      f.client.reserveStock({ orderId: gone, items: [{ productId: a, quantity: 1 }] }),
    );
    assert.equal(afterHeld - mark, 2n, "only the successful reservation wrote events");
    assert.deepEqual(await f.outboxSince(afterHeld), []);
    assert.equal((await f.stock(a)).reserved, 1n);
  });

  test("a refused SetStock writes no event", async () => {
    const productId = await f.product(5);
    await f.client.reserveStock({ orderId: randomUUID(), items: [{ productId, quantity: 3 }] });
    const mark = await f.outboxMark();
    await rejection(f.client.setStock({ productId, onHand: 2n }, f.admin));
    assert.deepEqual(await f.outboxSince(mark), []);
  });
});
