import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { ReservationStatus } from "@meshmart/kit/gen/meshmart/inventory/v1/inventory_pb.js";
import { DeadlinePassedError } from "../src/store.js";
import {
  createInventoryFixture,
  errorInfosOf,
  type InventoryFixture,
} from "./support/inventory-fixture.js";

// Many callers at once, through the production handler chain, on a production-sized pool:
// stock is never over-sold, never negative, and transactions touching the same products
// in different orders do not deadlock.
let f: InventoryFixture;

before(async () => {
  f = await createInventoryFixture("inventory_concurrency");
});
after(() => f?.close());

/** Samples the lowest availability of `productIds` until stopped. */
function watchAvailability(productIds: string[]) {
  let lowest: bigint | undefined;
  let samples = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const [row] = await f.sql<{ min: bigint | null }[]>`
        select min(on_hand - reserved) as min from stock_levels
        where product_id in ${f.sql(productIds)}`;
      const min = row?.min ?? undefined;
      if (min !== undefined && (lowest === undefined || min < lowest)) lowest = min;
      samples++;
      await new Promise((r) => setTimeout(r, 2));
    }
  })();
  return async () => {
    running = false;
    await loop;
    return { lowest, samples };
  };
}

/** The reason of a FAILED_PRECONDITION/NOT_FOUND with ErrorInfo, else the error's code name. */
function failureKind(reason: unknown): string {
  const err = ConnectError.from(reason);
  const [info] = errorInfosOf(err);
  return info === undefined ? `code ${Code[err.code]}: ${err.rawMessage}` : info.reason;
}

describe("concurrent reservations", () => {
  test("200 orders for 1 unit each, 50 on hand: exactly 50 succeed, none over-sold", async () => {
    const productId = await f.product(50);
    const mark = await f.outboxMark();
    const watch = watchAvailability([productId]);
    const results = await Promise.allSettled(
      Array.from({ length: 200 }, () =>
        f.client.reserveStock({ orderId: randomUUID(), items: [{ productId, quantity: 1 }] }),
      ),
    );
    const { lowest, samples } = await watch();
    const ok = results.filter((r) => r.status === "fulfilled");
    const failures = results.flatMap((r) =>
      r.status === "rejected" ? [failureKind(r.reason)] : [],
    );
    assert.equal(ok.length, 50);
    assert.deepEqual(new Set(failures), new Set(["INSUFFICIENT_STOCK"]), "every other one refused");
    const row = await f.stock(productId);
    assert.deepEqual(
      { onHand: row.on_hand, reserved: row.reserved, available: row.on_hand - row.reserved },
      { onHand: 50n, reserved: 50n, available: 0n },
    );
    assert.ok(samples > 0);
    assert.ok(lowest === undefined || lowest >= 0n, `availability went to ${lowest}`);
    const [held] = await f.sql<{ n: bigint; units: bigint }[]>`
      select count(distinct r.order_id) as n, coalesce(sum(i.quantity), 0) as units
      from reservations r join reservation_items i using (order_id)
      where i.product_id = ${productId} and r.status = 'reserved'`;
    assert.deepEqual([held?.n, held?.units], [50n, 50n]);
    const reservedEvents = (await f.outboxSince(mark)).filter(
      (e) => e.event_type === "meshmart.inventory.v1.StockReserved",
    );
    assert.equal(reservedEvents.length, 50, "one StockReserved per successful order");
  });

  test("multi-product orders in opposite orders, with releases and commits racing, conserve stock", async () => {
    const products = [await f.product(30), await f.product(30), await f.product(30)];
    const [p0, p1, p2] = products as [string, string, string];
    const shapes = [
      [p0, p1, p2],
      [p2, p1, p0],
      [p1, p0],
      [p2, p0],
      [p1, p2],
    ];
    const watch = watchAvailability(products);
    const outcomes = await Promise.allSettled(
      Array.from({ length: 60 }, async (_, i) => {
        const orderId = randomUUID();
        const items = (shapes[i % shapes.length] ?? []).map((productId, k) => ({
          productId,
          quantity: 1 + ((i + k) % 3),
        }));
        await f.client.reserveStock({ orderId, items });
        // Every third order is cancelled, every third confirmed, the rest stay held; a
        // duplicate delivery of each step runs concurrently with it.
        if (i % 3 === 0) {
          await Promise.all([
            f.client.releaseReservation({ orderId }),
            f.client.releaseReservation({ orderId }),
          ]);
        } else if (i % 3 === 1) {
          await Promise.all([
            f.client.commitReservation({ orderId }),
            f.client.commitReservation({ orderId }),
          ]);
        }
      }),
    );
    const { lowest } = await watch();
    const failures = outcomes.flatMap((o) =>
      o.status === "rejected" ? [failureKind(o.reason)] : [],
    );
    assert.ok(
      failures.every((k) => k === "INSUFFICIENT_STOCK"),
      `only shortages may fail: ${[...new Set(failures)].join(", ")}`,
    );
    assert.ok(lowest === undefined || lowest >= 0n, `availability went to ${lowest}`);
    // Conservation: on_hand + units sold = initial; reserved = units still held.
    const rows = await f.sql<{ product_id: string; status: string; units: bigint }[]>`
      select i.product_id, r.status, sum(i.quantity) as units
      from reservations r join reservation_items i using (order_id)
      where i.product_id in ${f.sql(products)}
      group by i.product_id, r.status`;
    const units = (id: string, status: string) =>
      rows.find((r) => r.product_id === id && r.status === status)?.units ?? 0n;
    for (const id of products) {
      const row = await f.stock(id);
      assert.equal(row.on_hand + units(id, "committed"), 30n, `on_hand of ${id}`);
      assert.equal(row.reserved, units(id, "reserved"), `reserved of ${id}`);
    }
  });

  test("20 concurrent retries of one order hold its stock once", async () => {
    const productId = await f.product(10);
    const orderId = randomUUID();
    const mark = await f.outboxMark();
    const results = await Promise.all(
      Array.from({ length: 20 }, () =>
        f.client.reserveStock({ orderId, items: [{ productId, quantity: 3 }] }),
      ),
    );
    for (const r of results) {
      assert.equal(r.reservation?.status, ReservationStatus.RESERVED);
      assert.deepEqual(r.reservation, results[0]?.reservation);
    }
    assert.equal((await f.stock(productId)).reserved, 3n);
    const reserved = (await f.outboxSince(mark)).filter(
      (e) => e.event_type === "meshmart.inventory.v1.StockReserved",
    );
    assert.equal(reserved.length, 1);
  });

  test("a commit racing a release: exactly one wins, the other is FAILED_PRECONDITION", async () => {
    for (let round = 0; round < 10; round++) {
      const productId = await f.product(2);
      const orderId = randomUUID();
      await f.client.reserveStock({ orderId, items: [{ productId, quantity: 2 }] });
      const [commit, release] = await Promise.allSettled([
        f.client.commitReservation({ orderId }),
        f.client.releaseReservation({ orderId }),
      ]);
      const won = [commit, release].filter((r) => r.status === "fulfilled");
      assert.equal(won.length, 1, `round ${round}: one winner`);
      const lost = [commit, release].find((r) => r.status === "rejected");
      assert.equal(ConnectError.from(lost?.reason).code, Code.FailedPrecondition);
      const row = await f.stock(productId);
      assert.deepEqual(
        [row.on_hand, row.reserved],
        commit.status === "fulfilled" ? [0n, 0n] : [2n, 0n],
      );
    }
  });

  test("a reservation still queued on the stock row when its caller's deadline passes gives up and holds nothing", async () => {
    // A burst on one product queues every reservation on its stock row. One left queued
    // after its caller timed out would take the lock later for nobody (and the caller's
    // retry would queue behind it): under load, the queue fills with abandoned work.
    const productId = await f.product(5);
    const orderId = randomUUID();
    const unlock = await f.holdStockRow(productId);
    try {
      const started = Date.now();
      const err = await f.client
        .reserveStock({ orderId, items: [{ productId, quantity: 1 }] }, { timeoutMs: 300 })
        .then(
          () => assert.fail("reserved while the stock row was locked"),
          (reason: unknown) => ConnectError.from(reason),
        );
      assert.equal(err.code, Code.DeadlineExceeded);
      assert.ok(Date.now() - started < 2_000, "answered at the deadline");
      // Give an abandoned transaction time to show up in the lock queue, then look.
      await new Promise((r) => setTimeout(r, 300));
      const [waiting] = await f.sql<{ n: bigint }[]>`
        select count(*) as n from pg_locks l join pg_stat_activity a using (pid)
        where not l.granted and a.datname = current_database()`;
      assert.equal(waiting?.n, 0n, "a transaction is still queued for a caller that is gone");
    } finally {
      await unlock();
    }
    await new Promise((r) => setTimeout(r, 100));
    const [held] = await f.sql<{ n: bigint }[]>`
      select count(*) as n from reservations where order_id = ${orderId}`;
    assert.equal(held?.n, 0n, "no reservation was made after the caller gave up");
    assert.equal((await f.stock(productId)).reserved, 0n);
    // The caller's retry reserves normally.
    const retry = await f.client.reserveStock({ orderId, items: [{ productId, quantity: 1 }] });
    assert.equal(retry.reservation?.status, ReservationStatus.RESERVED);
  });

  test("a deadline already passed changes nothing and never reaches the database", async () => {
    const productId = await f.product(5);
    const orderId = randomUUID();
    await assert.rejects(
      f.store.reserve(orderId, [{ product_id: productId, quantity: 1 }], Date.now() - 1),
      DeadlinePassedError,
    );
    await assert.rejects(f.store.commit(orderId, Date.now() - 1), DeadlinePassedError);
    await assert.rejects(f.store.release(orderId, Date.now() - 1), DeadlinePassedError);
    const [row] = await f.sql<{ n: bigint }[]>`
      select count(*) as n from reservations where order_id = ${orderId}`;
    assert.equal(row?.n, 0n);
  });
});
