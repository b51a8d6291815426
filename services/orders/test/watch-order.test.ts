import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, test } from "node:test";
import { createContextValues, createHandlerContext } from "@connectrpc/connect";
import { callerKey } from "@meshmart/kit";
import { OrderStatus } from "@meshmart/kit/gen/meshmart/orders/v1/orders_pb.js";
import { OrderService } from "@meshmart/kit/gen/meshmart/orders/v1/orders_service_pb.js";
import { createOrdersHandlers, type OrdersDeps } from "../src/handlers.js";
import { createOrderChanges, type OrderChanges } from "../src/order-changes.js";
import type { OrderRecord, OrderStatusText } from "../src/store.js";

// WatchOrder re-reads an order when told it changed. A change committed while a read is in
// flight (the read saw the state before it) must still wake the next wait: otherwise the
// stream sits on a stale state until the fallback re-read, seconds later.

const FALLBACK_MS = 30_000;

function record(id: string, userId: string, status: OrderStatusText, at: number): OrderRecord {
  return {
    order: {
      id,
      seq: 1n,
      user_id: userId,
      request_id: "r",
      request_hash: "h",
      status,
      currency: "EUR",
      total_units: 1n,
      total_nanos: 0,
      cancel_code: "",
      cancel_reason: "",
      payment_id: null,
      card_last4: "4242",
      created_at: new Date(0),
      updated_at: new Date(at),
    },
    items: [],
  };
}

type Read = (orderId: string, changes: OrderChanges) => Promise<OrderRecord>;

/** Runs WatchOrder with `read` as the store's read, until the stream ends (2 s at most). */
async function watch(read: Read, orderId: string, userId: string) {
  const changes = createOrderChanges();
  const handlers = createOrdersHandlers({
    // Only what WatchOrder touches.
    store: { get: (id: string) => read(id, changes) },
    changes,
    watchFallbackMs: FALLBACK_MS,
    shuttingDown: new AbortController().signal,
  } as unknown as OrdersDeps);
  const ctx = createHandlerContext({
    service: OrderService,
    method: OrderService.method.watchOrder,
    protocolName: "grpc",
    requestMethod: "POST",
    url: "http://orders.test/meshmart.orders.v1.OrderService/WatchOrder",
    timeoutMs: 2_000,
    contextValues: createContextValues().set(callerKey, {
      userId,
      email: "watcher@example.com",
      roles: ["customer"],
      token: "t",
    }),
  });
  const seen: OrderStatus[] = [];
  const started = Date.now();
  const stream = handlers.watchOrder?.({ orderId } as never, ctx);
  assert.ok(stream);
  for await (const res of stream) {
    if (res.order?.status !== undefined) seen.push(res.order.status);
  }
  return { seen, ms: Date.now() - started };
}

describe("WatchOrder wake-ups", () => {
  test("a change notified while the order is being read wakes the next wait (no lost wake-up)", async () => {
    const orderId = randomUUID();
    const userId = randomUUID();
    let reads = 0;
    // The injected interleaving: the saga records a step while each read is in flight, so
    // the read returns the state from before it and the notification lands before the read
    // does, between the read and the wait that follows it.
    const read: Read = async (id, changes) => {
      reads += 1;
      const answer = record(id, userId, reads < 3 ? "PENDING" : "CONFIRMED", reads < 3 ? 1 : 2);
      changes.notify(id);
      return answer;
    };
    const { seen, ms } = await watch(read, orderId, userId);
    assert.deepEqual(seen, [OrderStatus.PENDING, OrderStatus.CONFIRMED]);
    assert.ok(ms < 1_000, `the terminal state came after ${ms} ms (fallback ${FALLBACK_MS} ms)`);
    assert.equal(reads, 3);
  });

  test("a terminal commit notified with its order ends the stream without another read", async () => {
    const orderId = randomUUID();
    const userId = randomUUID();
    let reads = 0;
    // The store only ever answers PENDING: the terminal state can come from the notify alone.
    const read: Read = async (id, changes) => {
      reads += 1;
      setTimeout(() => changes.notify(id, record(id, userId, "CANCELLED", 2)), 20);
      return record(id, userId, "PENDING", 1);
    };
    const { seen, ms } = await watch(read, orderId, userId);
    assert.deepEqual(seen, [OrderStatus.PENDING, OrderStatus.CANCELLED]);
    assert.ok(ms < 1_000, `the terminal state came after ${ms} ms`);
    assert.equal(reads, 1);
  });
});

describe("order changes", () => {
  test("a change notified after listen and before wait ends the wait at once", async () => {
    const changes = createOrderChanges();
    const change = changes.listen("o1");
    changes.notify("o1");
    const started = Date.now();
    await change.wait(30_000);
    assert.ok(Date.now() - started < 100);
  });

  test("a wait with no change ends after its time; a change of another order or before listen does not end it", async () => {
    const changes = createOrderChanges();
    changes.notify("o1");
    const change = changes.listen("o1");
    changes.notify("o2");
    const started = Date.now();
    await change.wait(150);
    assert.ok(Date.now() - started >= 140, "woken early");
  });

  test("every listener of the order is woken; an aborted or closed one stops listening", async () => {
    const changes = createOrderChanges();
    const a = changes.listen("o1");
    const b = changes.listen("o1");
    const waits = Promise.all([a.wait(30_000), b.wait(30_000)]);
    changes.notify("o1");
    await waits;
    const stop = new AbortController();
    const c = changes.listen("o1");
    const waiting = c.wait(30_000, stop.signal);
    stop.abort();
    await waiting;
    const d = changes.listen("o1");
    const closing = d.wait(30_000);
    d.close();
    await closing;
  });
});
