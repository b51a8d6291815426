import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { Code, type ConnectError } from "@connectrpc/connect";
import { ReservationStatus } from "@meshmart/kit/gen/meshmart/inventory/v1/inventory_pb.js";
import {
  createInventoryFixture,
  errorInfosOf,
  type InventoryFixture,
  rejection,
  uniqueSku,
  violationsOf,
} from "./support/inventory-fixture.js";

// Every InventoryService RPC, in memory through the production interceptor chain
// (validation, auth, errors), against a real database.
let f: InventoryFixture;

before(async () => {
  f = await createInventoryFixture("inventory_handlers");
});
after(() => f?.close());

/** The single ErrorInfo of an error, as (reason, metadata). */
function reasonOf(err: ConnectError): { reason: string; metadata: Record<string, string> } {
  const infos = errorInfosOf(err);
  assert.equal(infos.length, 1, `one ErrorInfo detail in: ${err.message}`);
  const [info] = infos;
  assert.equal(info?.domain, "inventory.meshmart");
  return { reason: info?.reason ?? "", metadata: { ...info?.metadata } };
}

const available = async (productId: string) => {
  const row = await f.stock(productId);
  return row.on_hand - row.reserved;
};

const reservationRows = async (orderId: string) => {
  const [row] = await f.sql<{ n: bigint }[]>`
    select count(*) as n from reservations where order_id = ${orderId}`;
  return Number(row?.n);
};

describe("GetStock", () => {
  test("by product id and by SKU", async () => {
    const sku = uniqueSku("GET");
    const id = await f.product(7, sku);
    await f.sql`update stock_levels set reserved = 2 where product_id = ${id}`;
    for (const key of [
      { case: "productId" as const, value: id },
      { case: "sku" as const, value: sku },
    ]) {
      const { stock } = await f.client.getStock({ key });
      assert.deepEqual(
        {
          productId: stock?.productId,
          sku: stock?.sku,
          onHand: stock?.onHand,
          reserved: stock?.reserved,
          available: stock?.available,
        },
        { productId: id, sku, onHand: 7n, reserved: 2n, available: 5n },
      );
      assert.ok(stock?.updateTime, "update_time set");
    }
  });

  test("a product without a stock record is NOT_FOUND, by id and by SKU", async () => {
    const byId = await rejection(
      f.client.getStock({ key: { case: "productId", value: randomUUID() } }),
    );
    assert.equal(byId.code, Code.NotFound);
    const bySku = await rejection(
      f.client.getStock({ key: { case: "sku", value: uniqueSku("NONE") } }),
    );
    assert.equal(bySku.code, Code.NotFound);
  });

  test("no key is INVALID_ARGUMENT", async () => {
    const err = await rejection(f.client.getStock({}));
    assert.equal(err.code, Code.InvalidArgument);
  });

  test("needs no token (the mesh authorizes callers)", async () => {
    const id = await f.product(1);
    const { stock } = await f.client.getStock({ key: { case: "productId", value: id } });
    assert.equal(stock?.onHand, 1n);
  });
});

describe("SetStock", () => {
  test("requires role admin", async () => {
    const req = { productId: randomUUID(), onHand: 5n };
    assert.equal((await rejection(f.client.setStock(req))).code, Code.Unauthenticated);
    assert.equal((await rejection(f.client.setStock(req, f.customer))).code, Code.PermissionDenied);
    assert.equal((await rejection(f.client.setStock(req, f.forged))).code, Code.Unauthenticated);
    const [row] = await f.sql`select 1 from stock_levels where product_id = ${req.productId}`;
    assert.equal(row, undefined, "nothing created");
  });

  test("creates the record, then sets absolute values; a retry changes nothing", async () => {
    const productId = randomUUID();
    const sku = uniqueSku("SET");
    const created = await f.client.setStock({ productId, sku, onHand: 10n }, f.admin);
    assert.equal(created.stock?.onHand, 10n);
    assert.equal(created.stock?.available, 10n);
    assert.equal(created.stock?.sku, sku);

    const mark = await f.outboxMark();
    const first = await f.client.setStock({ productId, onHand: 4n }, f.admin);
    const retry = await f.client.setStock({ productId, onHand: 4n }, f.admin);
    assert.equal(first.stock?.onHand, 4n);
    assert.equal(first.stock?.sku, sku, "an empty sku leaves the stored one");
    assert.deepEqual(retry.stock, first.stock, "the retry answers with the same level");
    const events = await f.outboxSince(mark);
    assert.deepEqual(
      events.map((e) => e.event_type),
      ["meshmart.inventory.v1.StockLevelChanged"],
      "one StockLevelChanged for the change, none for the retry",
    );
  });

  test("below the reserved units is FAILED_PRECONDITION and changes nothing", async () => {
    const productId = await f.product(10);
    await f.client.reserveStock({ orderId: randomUUID(), items: [{ productId, quantity: 6 }] });
    const err = await rejection(f.client.setStock({ productId, onHand: 5n }, f.admin));
    assert.equal(err.code, Code.FailedPrecondition);
    assert.equal((await f.stock(productId)).on_hand, 10n);
    const ok = await f.client.setStock({ productId, onHand: 6n }, f.admin);
    assert.equal(ok.stock?.available, 0n);
  });

  test("a SKU set on another product moves to it", async () => {
    const sku = uniqueSku("MOV");
    const old = await f.product(3, sku);
    const productId = randomUUID();
    const mark = await f.outboxMark();
    await f.client.setStock({ productId, sku, onHand: 1n }, f.admin);
    const { stock } = await f.client.getStock({ key: { case: "sku", value: sku } });
    assert.equal(stock?.productId, productId);
    assert.equal((await f.stock(old)).sku, "");
    const changed = (await f.outboxSince(mark)).map((e) => e.event_type);
    assert.equal(changed.length, 2, "a StockLevelChanged for each product");
  });

  test("on_hand out of range is INVALID_ARGUMENT", async () => {
    const err = await rejection(
      f.client.setStock({ productId: randomUUID(), onHand: -1n }, f.admin),
    );
    assert.deepEqual(violationsOf(err), [{ path: "on_hand", rule: "int64.gte_lte" }]);
  });
});

describe("ReserveStock", () => {
  test("holds every item and returns a RESERVED reservation", async () => {
    const [a, b] = [await f.product(5), await f.product(8)];
    const orderId = randomUUID();
    const { reservation } = await f.client.reserveStock({
      orderId,
      items: [
        { productId: b, quantity: 3 },
        { productId: a, quantity: 5 },
      ],
    });
    assert.equal(reservation?.orderId, orderId);
    assert.equal(reservation?.status, ReservationStatus.RESERVED);
    assert.deepEqual(
      new Map(reservation?.items.map((i) => [i.productId, i.quantity])),
      new Map([
        [a, 5],
        [b, 3],
      ]),
    );
    assert.equal(await available(a), 0n);
    assert.equal(await available(b), 5n);
    assert.equal((await f.stock(b)).on_hand, 8n, "on_hand unchanged until commit");
  });

  test("all or nothing: one short item holds nothing (INSUFFICIENT_STOCK)", async () => {
    const [a, b] = [await f.product(5), await f.product(1)];
    const orderId = randomUUID();
    const err = await rejection(
      f.client.reserveStock({
        orderId,
        items: [
          { productId: a, quantity: 2 },
          { productId: b, quantity: 2 },
        ],
      }),
    );
    assert.equal(err.code, Code.FailedPrecondition);
    assert.deepEqual(reasonOf(err), {
      reason: "INSUFFICIENT_STOCK",
      metadata: { product_id: b, requested: "2", available: "1" },
    });
    assert.equal(await available(a), 5n, "the satisfiable item was not held either");
    // The refusal is final: the order's reservation is recorded as released, holding
    // nothing, so an attempt still in flight (or a retry once stock is back) holds nothing.
    const { reservation } = await f.client.getReservation({ orderId });
    assert.equal(reservation?.status, ReservationStatus.RELEASED);
    assert.deepEqual(reservation?.items, []);
    await f.client.setStock({ productId: b, onHand: 2n }, f.admin);
    const late = await rejection(
      f.client.reserveStock({
        orderId,
        items: [
          { productId: a, quantity: 2 },
          { productId: b, quantity: 2 },
        ],
      }),
    );
    assert.equal(reasonOf(late).reason, "RESERVATION_RELEASED");
    assert.deepEqual([await available(a), await available(b)], [5n, 2n]);
  });

  test("a product without a stock record is NOT_FOUND with UNKNOWN_PRODUCT", async () => {
    const known = await f.product(5);
    const unknown = randomUUID();
    const orderId = randomUUID();
    const err = await rejection(
      f.client.reserveStock({
        orderId,
        items: [
          { productId: known, quantity: 9 },
          { productId: unknown, quantity: 1 },
        ],
      }),
    );
    assert.equal(err.code, Code.NotFound);
    assert.deepEqual(reasonOf(err), {
      reason: "UNKNOWN_PRODUCT",
      metadata: { product_id: unknown },
    });
    assert.equal(await available(known), 5n);
    const { reservation } = await f.client.getReservation({ orderId });
    assert.equal(reservation?.status, ReservationStatus.RELEASED, "a final refusal");
    assert.deepEqual(reservation?.items, []);
  });

  test("the same order with the same items returns the same reservation, held once", async () => {
    const productId = await f.product(10);
    const orderId = randomUUID();
    const req = { orderId, items: [{ productId, quantity: 4 }] };
    const first = await f.client.reserveStock(req);
    const mark = await f.outboxMark();
    const again = await f.client.reserveStock(req);
    assert.deepEqual(again.reservation, first.reservation);
    assert.equal(await available(productId), 6n, "held once");
    assert.deepEqual(await f.outboxSince(mark), [], "a retry publishes nothing");
  });

  test("the same order with different items is RESERVATION_MISMATCH", async () => {
    const productId = await f.product(10);
    const orderId = randomUUID();
    await f.client.reserveStock({ orderId, items: [{ productId, quantity: 4 }] });
    for (const items of [
      [{ productId, quantity: 5 }],
      [
        { productId, quantity: 4 },
        { productId: await f.product(1), quantity: 1 },
      ],
    ]) {
      const err = await rejection(f.client.reserveStock({ orderId, items }));
      assert.equal(err.code, Code.FailedPrecondition);
      assert.deepEqual(reasonOf(err), {
        reason: "RESERVATION_MISMATCH",
        metadata: { order_id: orderId },
      });
    }
    assert.equal(await available(productId), 6n);
  });

  test("after a release the order cannot reserve again (RESERVATION_RELEASED)", async () => {
    const productId = await f.product(3);
    const orderId = randomUUID();
    const req = { orderId, items: [{ productId, quantity: 3 }] };
    await f.client.reserveStock(req);
    await f.client.releaseReservation({ orderId });
    const err = await rejection(f.client.reserveStock(req));
    assert.equal(err.code, Code.FailedPrecondition);
    assert.deepEqual(reasonOf(err), {
      reason: "RESERVATION_RELEASED",
      metadata: { order_id: orderId },
    });
    assert.equal(await available(productId), 3n);
  });

  test("a late retry after commit returns the COMMITTED reservation", async () => {
    const productId = await f.product(3);
    const orderId = randomUUID();
    const req = { orderId, items: [{ productId, quantity: 2 }] };
    await f.client.reserveStock(req);
    await f.client.commitReservation({ orderId });
    const late = await f.client.reserveStock(req);
    assert.equal(late.reservation?.status, ReservationStatus.COMMITTED);
    assert.deepEqual(
      { onHand: (await f.stock(productId)).on_hand, available: await available(productId) },
      { onHand: 1n, available: 1n },
    );
  });

  test("an order id in upper case is the same order", async () => {
    const productId = await f.product(3);
    const orderId = randomUUID();
    const items = [{ productId: productId.toUpperCase(), quantity: 1 }];
    await f.client.reserveStock({ orderId: orderId.toUpperCase(), items });
    const again = await f.client.reserveStock({ orderId, items });
    assert.equal(again.reservation?.orderId, orderId);
    assert.equal(await available(productId), 2n);
  });

  test("needs no token, but a forged one is UNAUTHENTICATED", async () => {
    const productId = await f.product(3);
    const req = { orderId: randomUUID(), items: [{ productId, quantity: 1 }] };
    assert.equal(
      (await rejection(f.client.reserveStock(req, f.forged))).code,
      Code.Unauthenticated,
    );
    const ok = await f.client.reserveStock(req, f.customer);
    assert.equal(ok.reservation?.status, ReservationStatus.RESERVED);
  });

  test("request rules: items required, each product once, quantity 1..1000", async () => {
    const productId = await f.product(3);
    const orderId = randomUUID();
    assert.deepEqual(violationsOf(await rejection(f.client.reserveStock({ orderId }))), [
      { path: "items", rule: "repeated.min_items" },
    ]);
    const twice = await rejection(
      f.client.reserveStock({
        orderId,
        items: [
          { productId, quantity: 1 },
          { productId, quantity: 1 },
        ],
      }),
    );
    assert.deepEqual(violationsOf(twice), [{ path: "items", rule: "items.unique_products" }]);
    const zero = await rejection(
      f.client.reserveStock({ orderId, items: [{ productId, quantity: 0 }] }),
    );
    assert.deepEqual(violationsOf(zero), [{ path: "items.quantity", rule: "int32.gte_lte" }]);
    assert.equal(await reservationRows(orderId), 0);
  });
});

describe("ReleaseReservation", () => {
  test("returns the units; a second release returns the reservation unchanged", async () => {
    const productId = await f.product(4);
    const orderId = randomUUID();
    await f.client.reserveStock({ orderId, items: [{ productId, quantity: 4 }] });
    const mark = await f.outboxMark();
    const { reservation } = await f.client.releaseReservation({ orderId });
    assert.equal(reservation?.status, ReservationStatus.RELEASED);
    assert.deepEqual(
      reservation?.items.map((i) => [i.productId, i.quantity]),
      [[productId, 4]],
    );
    assert.equal(await available(productId), 4n);
    const again = await f.client.releaseReservation({ orderId });
    assert.deepEqual(again.reservation, reservation);
    assert.equal(await available(productId), 4n, "not released twice");
    assert.deepEqual(
      (await f.outboxSince(mark)).map((e) => e.event_type),
      ["meshmart.inventory.v1.StockReleased", "meshmart.inventory.v1.StockLevelChanged"],
    );
  });

  test("an order without a reservation records a RELEASED one with no items", async () => {
    const orderId = randomUUID();
    const mark = await f.outboxMark();
    const { reservation } = await f.client.releaseReservation({ orderId });
    assert.equal(reservation?.status, ReservationStatus.RELEASED);
    assert.deepEqual(reservation?.items, []);
    assert.deepEqual(await f.outboxSince(mark), [], "no units, no StockReleased");
    const got = await f.client.getReservation({ orderId });
    assert.equal(got.reservation?.status, ReservationStatus.RELEASED);
    // The ReserveStock the saga sent before compensating arrives late: refused.
    const productId = await f.product(2);
    const late = await rejection(
      f.client.reserveStock({ orderId, items: [{ productId, quantity: 1 }] }),
    );
    assert.equal(reasonOf(late).reason, "RESERVATION_RELEASED");
    assert.equal(await available(productId), 2n);
  });

  test("after a commit it is FAILED_PRECONDITION and stock stays sold", async () => {
    const productId = await f.product(4);
    const orderId = randomUUID();
    await f.client.reserveStock({ orderId, items: [{ productId, quantity: 3 }] });
    await f.client.commitReservation({ orderId });
    const err = await rejection(f.client.releaseReservation({ orderId }));
    assert.equal(err.code, Code.FailedPrecondition);
    const row = await f.stock(productId);
    assert.deepEqual({ onHand: row.on_hand, reserved: row.reserved }, { onHand: 1n, reserved: 0n });
    const got = await f.client.getReservation({ orderId });
    assert.equal(got.reservation?.status, ReservationStatus.COMMITTED);
  });
});

describe("CommitReservation", () => {
  test("the units leave on_hand; a second commit returns it unchanged", async () => {
    const [a, b] = [await f.product(5), await f.product(5)];
    const orderId = randomUUID();
    await f.client.reserveStock({
      orderId,
      items: [
        { productId: a, quantity: 2 },
        { productId: b, quantity: 5 },
      ],
    });
    const mark = await f.outboxMark();
    const { reservation } = await f.client.commitReservation({ orderId });
    assert.equal(reservation?.status, ReservationStatus.COMMITTED);
    const again = await f.client.commitReservation({ orderId });
    assert.deepEqual(again.reservation, reservation);
    for (const [id, onHand] of [
      [a, 3n],
      [b, 0n],
    ] as const) {
      const row = await f.stock(id);
      assert.deepEqual({ onHand: row.on_hand, reserved: row.reserved }, { onHand, reserved: 0n });
    }
    assert.deepEqual(
      (await f.outboxSince(mark)).map((e) => e.event_type),
      [
        "meshmart.inventory.v1.StockCommitted",
        "meshmart.inventory.v1.StockLevelChanged",
        "meshmart.inventory.v1.StockLevelChanged",
      ],
    );
  });

  test("an order without a reservation is NOT_FOUND", async () => {
    const err = await rejection(f.client.commitReservation({ orderId: randomUUID() }));
    assert.equal(err.code, Code.NotFound);
  });

  test("a released reservation is FAILED_PRECONDITION", async () => {
    const productId = await f.product(4);
    const orderId = randomUUID();
    await f.client.reserveStock({ orderId, items: [{ productId, quantity: 3 }] });
    await f.client.releaseReservation({ orderId });
    const err = await rejection(f.client.commitReservation({ orderId }));
    assert.equal(err.code, Code.FailedPrecondition);
    assert.equal((await f.stock(productId)).on_hand, 4n);
  });
});

describe("GetReservation", () => {
  test("returns the reservation, NOT_FOUND for an order without one", async () => {
    const productId = await f.product(4);
    const orderId = randomUUID();
    const made = await f.client.reserveStock({ orderId, items: [{ productId, quantity: 1 }] });
    const { reservation } = await f.client.getReservation({ orderId });
    assert.deepEqual(reservation, made.reservation);
    const err = await rejection(f.client.getReservation({ orderId: randomUUID() }));
    assert.equal(err.code, Code.NotFound);
  });

  test("a malformed order id is INVALID_ARGUMENT", async () => {
    const err = await rejection(f.client.getReservation({ orderId: "order-1" }));
    assert.deepEqual(violationsOf(err), [{ path: "order_id", rule: "string.uuid" }]);
  });
});
