import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { ReservationStatus } from "@meshmart/kit/gen/meshmart/inventory/v1/inventory_pb.js";
import {
  createInventoryFixture,
  errorInfosOf,
  type InventoryFixture,
} from "./support/inventory-fixture.js";

// A flash sale: most ReserveStock calls want a product that has sold out. They are told so
// from a plain read, without waiting for the stock row's lock (held by the orders that can
// still succeed) and without taking it. Real Postgres: another transaction holds the row
// with FOR UPDATE while the calls are made.
let f: InventoryFixture;

before(async () => {
  f = await createInventoryFixture("inventory_sold_out");
});
after(() => f?.close());

/** Generous next to a refusal that needs no lock, short next to a test timeout. */
const CALL_TIMEOUT_MS = 3_000;
/** A refusal that had to wait for the lock would take the whole CALL_TIMEOUT_MS. */
const PROMPT_MS = 1_000;

/** Backends of this test's database waiting for a lock now. */
async function lockWaiters(): Promise<bigint> {
  const [row] = await f.sql<{ n: bigint }[]>`
    select count(*) as n from pg_stat_activity
    where datname = current_database() and wait_event_type = 'Lock'`;
  return row?.n ?? 0n;
}

async function refusal(call: Promise<unknown>): Promise<{ err: ConnectError; ms: number }> {
  const started = performance.now();
  const err = await call.then(
    () => assert.fail("the reservation succeeded"),
    (reason: unknown) => ConnectError.from(reason),
  );
  return { err, ms: performance.now() - started };
}

describe("sold-out reservations", () => {
  test("an out-of-stock reservation is refused while another transaction holds the stock row", async () => {
    const productId = await f.product(3);
    const unlock = await f.holdStockRow(productId);
    try {
      const orderId = randomUUID();
      const { err, ms } = await refusal(
        f.client.reserveStock(
          { orderId, items: [{ productId, quantity: 5 }] },
          { timeoutMs: CALL_TIMEOUT_MS },
        ),
      );
      assert.equal(err.code, Code.FailedPrecondition, `${Code[err.code]}: ${err.rawMessage}`);
      const [info] = errorInfosOf(err);
      assert.equal(info?.reason, "INSUFFICIENT_STOCK");
      assert.deepEqual(info?.metadata, {
        product_id: productId,
        requested: "5",
        available: "3",
      });
      assert.ok(ms < PROMPT_MS, `refused after ${ms.toFixed(0)} ms: it waited for the row lock`);
      assert.equal(await lockWaiters(), 0n, "a refused reservation is still queued on the row");
      const [held] = await f.sql<{ status: string; items: bigint }[]>`
        select status, (select count(*) from reservation_items where order_id = ${orderId}) as items
        from reservations where order_id = ${orderId}`;
      assert.deepEqual(
        held,
        { status: "released", items: 0n },
        "a refusal is final, holding nothing",
      );
    } finally {
      await unlock();
    }
    const row = await f.stock(productId);
    assert.deepEqual([row.on_hand, row.reserved], [3n, 0n]);
  });

  test("a burst for a sold-out product is answered while its row is locked", async () => {
    const productId = await f.product(1);
    await f.client.reserveStock({
      orderId: randomUUID(),
      items: [{ productId, quantity: 1 }],
    });
    const unlock = await f.holdStockRow(productId);
    try {
      const started = performance.now();
      const outcomes = await Promise.all(
        Array.from({ length: 50 }, () =>
          refusal(
            f.client.reserveStock(
              { orderId: randomUUID(), items: [{ productId, quantity: 1 }] },
              { timeoutMs: CALL_TIMEOUT_MS },
            ),
          ),
        ),
      );
      const reasons = new Set(outcomes.map(({ err }) => errorInfosOf(err)[0]?.reason));
      assert.deepEqual(reasons, new Set(["INSUFFICIENT_STOCK"]));
      const ms = performance.now() - started;
      assert.ok(ms < PROMPT_MS * 2, `50 refusals took ${ms.toFixed(0)} ms`);
    } finally {
      await unlock();
    }
  });

  test("a reservation that can succeed waits for the row, then holds the units", async () => {
    const productId = await f.product(2);
    const orderId = randomUUID();
    const unlock = await f.holdStockRow(productId);
    let settled = false;
    const call = f.client
      .reserveStock({ orderId, items: [{ productId, quantity: 2 }] }, { timeoutMs: 10_000 })
      .finally(() => {
        settled = true;
      });
    try {
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(settled, false, "reserved while another transaction held the row");
    } finally {
      await unlock();
    }
    const { reservation } = await call;
    assert.equal(reservation?.status, ReservationStatus.RESERVED);
    const row = await f.stock(productId);
    assert.deepEqual([row.on_hand, row.reserved], [2n, 2n]);
  });

  test("a retry of a held reservation is answered without the stock row, even sold out", async () => {
    const productId = await f.product(1);
    const orderId = randomUUID();
    const items = [{ productId, quantity: 1 }];
    await f.client.reserveStock({ orderId, items });
    const unlock = await f.holdStockRow(productId);
    try {
      const started = performance.now();
      const { reservation } = await f.client.reserveStock(
        { orderId, items },
        { timeoutMs: CALL_TIMEOUT_MS },
      );
      assert.equal(reservation?.status, ReservationStatus.RESERVED);
      assert.ok(performance.now() - started < PROMPT_MS, "the retry waited for the row lock");
    } finally {
      await unlock();
    }
    const row = await f.stock(productId);
    assert.deepEqual([row.on_hand, row.reserved], [1n, 1n], "the retry held nothing more");
  });

  test("a released order is told it was released, not that the product sold out", async () => {
    const productId = await f.product(0);
    const orderId = randomUUID();
    await f.client.releaseReservation({ orderId });
    const { err } = await refusal(
      f.client.reserveStock({ orderId, items: [{ productId, quantity: 1 }] }),
    );
    assert.equal(errorInfosOf(err)[0]?.reason, "RESERVATION_RELEASED");
  });

  test("an unknown product is reported before a sold-out one, without a lock", async () => {
    const soldOut = await f.product(0);
    const unknown = randomUUID();
    const unlock = await f.holdStockRow(soldOut);
    try {
      const { err, ms } = await refusal(
        f.client.reserveStock(
          {
            orderId: randomUUID(),
            items: [
              { productId: soldOut, quantity: 1 },
              { productId: unknown, quantity: 1 },
            ],
          },
          { timeoutMs: CALL_TIMEOUT_MS },
        ),
      );
      assert.equal(err.code, Code.NotFound);
      assert.deepEqual(errorInfosOf(err)[0]?.metadata, { product_id: unknown });
      assert.ok(ms < PROMPT_MS, `refused after ${ms.toFixed(0)} ms`);
    } finally {
      await unlock();
    }
  });
});
