import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { createEventNames } from "@meshmart/kit";
import { openServiceTestDatabase, type ServiceTestDatabase } from "@meshmart/kit/testing";
import { Registry } from "prom-client";
import { nothingToVoid, runStep, type SagaDeps } from "../src/saga.js";
import { createSagaWorker } from "../src/saga-worker.js";
import {
  createOrdersStore,
  type OrderRecord,
  type OrdersStore,
  type RecordOutcome,
  type SagaRow,
  type Transition,
} from "../src/store.js";

// The saga's bookkeeping in orders' own database (real Postgres, no other service): which
// due sagas are claimed first, a step recorded without a lock only while nobody touched the
// saga, and which changes wake the RPCs that wait on an order.
let t: ServiceTestDatabase;
let store: OrdersStore;

const migrations = new URL("../migrations/", import.meta.url);
const LEASE_MS = 15_000;

before(async () => {
  t = await openServiceTestDatabase({ label: "orders_saga_store", service: "orders", migrations });
  store = createOrdersStore(t.sql, createEventNames("meshmart"));
});
after(() => t?.close());

/** A PENDING order of one line and its saga at RESERVE, as PlaceOrder stores it. */
async function placeOrder(units = 5n): Promise<string> {
  const id = randomUUID();
  const outcome = await store.create({
    id,
    userId: `user-${randomUUID()}`,
    requestId: randomUUID(),
    requestHash: "hash",
    priced: {
      currency: "EUR",
      lines: [
        {
          productId: randomUUID(),
          sku: "SKU-1",
          name: "A thing",
          quantity: 1,
          unit: { units, nanos: 0 },
          line: { units, nanos: 0 },
        },
      ],
      total: { units, nanos: 0 },
    },
    cardLast4: "4242",
    cardSealed: Buffer.from("sealed"),
    // Due at once, as if PlaceOrder's own run of the first step had died with its replica.
    leaseMs: 0,
  });
  assert.equal(outcome.kind, "created");
  return id;
}

/** Claims until `orderId` is among the claimed (other tests' sagas may be due too). */
async function claim(orderId: string): Promise<SagaRow> {
  for (let i = 0; i < 100; i++) {
    const claimed = await store.claimDue(10, LEASE_MS);
    const mine = claimed.find((c) => c.saga.order_id === orderId);
    if (mine !== undefined) return mine.saga;
    if (claimed.length === 0) break;
  }
  assert.fail(`saga ${orderId} was never claimed`);
}

/** Moves every saga still running out of the way (not due for an hour). */
async function parkEverything(): Promise<void> {
  await t.sql`
    update order_sagas set next_attempt_at = now() + interval '1 hour', claim_token = null
    where step <> 'DONE'`;
}

describe("claiming due sagas", () => {
  test("due sagas are claimed earliest due first, each with its order", async () => {
    await parkEverything();
    const placed = [await placeOrder(), await placeOrder(), await placeOrder()];
    const retried = await placeOrder();
    // The last order's RESERVE failed once; its retry came due before the others.
    await t.sql`
      update order_sagas set attempts = 2, last_error = 'DeadlineExceeded',
        next_attempt_at = now() - interval '1 second'
      where order_id = ${retried}`;
    const [first] = await store.claimDue(1, LEASE_MS);
    assert.equal(first?.saga.order_id, retried, "the retry waited behind sagas due after it");
    assert.equal(first?.saga.attempts, 3, "the claim counts the attempt");
    // The claim brings the order as it is stored: no read of its own per step.
    assert.deepEqual(first?.record, await store.get(retried));
    const rest = await store.claimDue(3, LEASE_MS);
    assert.deepEqual(
      rest.map((c) => c.saga.order_id),
      placed,
      "then the others, in the order they came due",
    );
    assert.deepEqual(await store.claimDue(3, LEASE_MS), [], "a claimed saga is not due");
  });
});

describe("recording a step", () => {
  const toAuthorize: (saga: SagaRow) => Transition = (saga) =>
    saga.cancel_requested
      ? { kind: "next", step: "RELEASE", changes: { cancel_code: "CUSTOMER_REQUESTED" } }
      : { kind: "next", step: "AUTHORIZE", changes: { stock_state: "RESERVED" } };

  test("a step that moves only the saga is recorded and the next one claimed", async () => {
    const id = await placeOrder();
    const saga = await claim(id);
    const token = saga.claim_token ?? "";
    const outcome = await store.record(id, token, toAuthorize, {
      leaseMs: LEASE_MS,
      keepClaim: true,
      known: saga,
    });
    assert.equal(outcome.kind, "claimed");
    const next = (outcome as Extract<RecordOutcome, { kind: "claimed" }>).saga;
    assert.equal(next.step, "AUTHORIZE");
    assert.equal(next.stock_state, "RESERVED");
    assert.equal(next.attempts, 1);
    assert.equal(next.auth_sent, true);
    assert.notEqual(next.claim_token, token, "a fresh claim for the next step");
    // The old claim is spent: its holder recording again is told it lost.
    const again = await store.record(id, token, toAuthorize, {
      leaseMs: LEASE_MS,
      keepClaim: true,
      known: saga,
    });
    assert.equal(again.kind, "lost");
  });

  test("a cancellation flagged while the step ran wins over what the worker knew", async () => {
    const id = await placeOrder();
    const saga = await claim(id);
    // CancelOrder while RESERVE is in flight: only a flag, applied when the step records.
    const planned = await store.requestCancel(id, undefined, "changed my mind", () => "flag");
    assert.deepEqual(planned, { kind: "planned", plan: "flag" });
    const outcome = await store.record(id, saga.claim_token ?? "", toAuthorize, {
      leaseMs: LEASE_MS,
      keepClaim: true,
      known: saga,
    });
    assert.equal(outcome.kind, "claimed");
    const next = (outcome as Extract<RecordOutcome, { kind: "claimed" }>).saga;
    assert.equal(next.step, "RELEASE", "the step was recorded from a stale copy of the saga");
    assert.equal(next.cancel_requested, true);
  });

  test("a claim that lapsed and was taken by another worker records nothing", async () => {
    const id = await placeOrder();
    const saga = await claim(id);
    await t.sql`update order_sagas set next_attempt_at = now() where order_id = ${id}`;
    const other = await claim(id);
    assert.notEqual(other.claim_token, saga.claim_token);
    const outcome = await store.record(id, saga.claim_token ?? "", toAuthorize, {
      leaseMs: LEASE_MS,
      keepClaim: true,
      known: saga,
    });
    assert.equal(outcome.kind, "lost");
    const [row] = await t.sql<{ step: string; claim_token: string }[]>`
      select step, claim_token from order_sagas where order_id = ${id}`;
    assert.deepEqual(row, { step: "RESERVE", claim_token: other.claim_token });
  });

  test("an out-of-stock order is cancelled straight from RELEASE, with its reason", async () => {
    const id = await placeOrder();
    let saga = await claim(id);
    const outOfStock: Transition = {
      kind: "next",
      step: "RELEASE",
      changes: { cancel_code: "OUT_OF_STOCK", cancel_reason: "out of stock: SKU-1" },
    };
    const released = await store.record(id, saga.claim_token ?? "", () => outOfStock, {
      leaseMs: LEASE_MS,
      keepClaim: true,
      known: saga,
    });
    saga = (released as Extract<RecordOutcome, { kind: "claimed" }>).saga;
    const record = await store.get(id);
    assert.ok(record);
    assert.equal(nothingToVoid(saga, record), true);
    const [mark] = await t.sql<{ seq: bigint }[]>`
      select coalesce(max(seq), 0) as seq from event_outbox`;
    const done = await store.record(
      id,
      saga.claim_token ?? "",
      () => ({ kind: "cancel", changes: { stock_state: "RELEASED" } }),
      { leaseMs: LEASE_MS, keepClaim: true, known: saga },
    );
    assert.equal(done.kind, "finished");
    const { order, items } = (done as Extract<RecordOutcome, { kind: "finished" }>).record;
    assert.equal(order.status, "CANCELLED");
    assert.equal(order.cancel_code, "OUT_OF_STOCK");
    assert.equal(order.cancel_reason, "out of stock: SKU-1");
    assert.equal(items.length, 1);
    const events = await t.sql<{ event_type: string }[]>`
      select event_type from event_outbox where seq > ${String(mark?.seq ?? 0n)} order by seq`;
    assert.deepEqual(
      events.map((e) => e.event_type),
      ["meshmart.orders.v1.OrderCancelled"],
    );
  });
});

describe("reading an order", () => {
  test("get returns the order with its lines, money exact", async () => {
    const id = await placeOrder(9_007_199_254_740_993n);
    const record = await store.get(id);
    assert.ok(record);
    assert.equal(record.order.id, id);
    assert.equal(record.order.total_units, 9_007_199_254_740_993n);
    assert.deepEqual(
      record.items.map((i) => [i.order_id, i.position, i.sku, i.quantity, i.unit_units]),
      [[id, 0, "SKU-1", 1, 9_007_199_254_740_993n]],
    );
    assert.equal(typeof record.items[0]?.unit_nanos, "number");
    assert.equal(await store.get(id, "someone-else"), undefined);
  });

  test("a PlaceOrder retry with the same request id gets the first order back", async () => {
    const id = randomUUID();
    const userId = `user-${randomUUID()}`;
    const requestId = randomUUID();
    const order = (orderId: string) => ({
      id: orderId,
      userId,
      requestId,
      requestHash: "same",
      priced: {
        currency: "EUR",
        lines: [
          {
            productId: randomUUID(),
            sku: "SKU-2",
            name: "B",
            quantity: 2,
            unit: { units: 1n, nanos: 0 },
            line: { units: 2n, nanos: 0 },
          },
        ],
        total: { units: 2n, nanos: 0 },
      },
      cardLast4: "4242",
      cardSealed: Buffer.from("sealed"),
      leaseMs: LEASE_MS,
    });
    const [a, b] = await Promise.all([store.create(order(id)), store.create(order(randomUUID()))]);
    const kinds = [a.kind, b.kind].sort();
    assert.deepEqual(kinds, ["created", "replayed"]);
    const ids = [a, b].map((o) => (o.kind === "conflict" ? "" : o.record.order.id));
    assert.equal(ids[0], ids[1], "both answers are the same order");
    const [count] = await t.sql<{ orders: bigint; sagas: bigint; lines: bigint }[]>`
      select (select count(*) from orders where request_id = ${requestId}) as orders,
        (select count(*) from order_sagas s join orders o on o.id = s.order_id
          where o.request_id = ${requestId}) as sagas,
        (select count(*) from order_items i join orders o on o.id = i.order_id
          where o.request_id = ${requestId}) as lines`;
    assert.deepEqual(count, { orders: 1n, sagas: 1n, lines: 1n });
  });
});

/** A saga row as the store returns it: claimed, first attempt, nothing held; `over` wins. */
function sagaRow(over: Partial<SagaRow>): SagaRow {
  return {
    order_id: randomUUID(),
    step: "RESERVE",
    attempts: 1,
    next_attempt_at: new Date(),
    claim_token: randomUUID(),
    cancel_requested: false,
    cancel_code: "",
    cancel_reason: "",
    stock_state: "NONE",
    payment_state: "NONE",
    payment_id: null,
    auth_sent: false,
    commit_sent: false,
    card_sealed: null,
    last_error: null,
    trace_context: null,
    ...over,
  };
}

describe("the saga worker", () => {
  test("wakes waiters only when the order changed as a client sees it", async () => {
    // A scripted store: RESERVE → RELEASE (saga only), then CANCELLED (the order).
    const saga = (step: SagaRow["step"]): SagaRow => sagaRow({ order_id: "o1", step });
    const record = {
      order: { id: "o1", status: "CANCELLED", cancel_code: "OUT_OF_STOCK" },
      items: [],
    } as unknown as OrderRecord;
    const outcomes: RecordOutcome[] = [
      { kind: "claimed", transition: "next", saga: saga("RELEASE") },
      { kind: "finished", transition: "cancel", record },
    ];
    let claims = 0;
    const scripted = {
      claimDue: async () => (claims++ === 0 ? [{ saga: saga("RESERVE"), record }] : []),
      get: async () => record,
      record: async () => outcomes.shift() ?? { kind: "lost" },
    } as unknown as OrdersStore;
    const woken: string[] = [];
    const registry = new Registry();
    let finished = () => {};
    const allFinished = new Promise<void>((resolve) => {
      finished = resolve;
    });
    const worker = createSagaWorker({
      store: scripted,
      runStep: async () => () => ({ kind: "next", step: "RELEASE" }),
      onChange: (id) => {
        woken.push(id);
        if (outcomes.length === 0) finished();
      },
      logger: t.logger,
      registry,
      concurrency: 1,
      pollMs: 60_000,
      leaseMs: LEASE_MS,
    });
    worker.start();
    await allFinished;
    await worker.stop();
    assert.deepEqual(woken, ["o1"], "woken for the terminal state only");
    // Both steps were recorded (the metric counts them).
    const metrics = await registry.getMetricsAsJSON();
    const steps = metrics.find((m) => m.name === "orders_saga_steps_total");
    assert.equal(
      steps?.values.reduce((a, v) => a + v.value, 0),
      2,
    );
  });
});

describe("a new order's first step (adopt)", () => {
  test("runs at once; a step that goes on takes a free slot, else is left due", async () => {
    const record = { order: { id: "o", status: "PENDING" }, items: [] } as unknown as OrderRecord;
    const kept: [string, boolean][] = [];
    let releaseFirst = () => {};
    const firstHeld = new Promise<void>((resolve) => {
      releaseFirst = resolve;
    });
    const scripted = {
      claimDue: async () => [],
      record: async (
        orderId: string,
        _token: string,
        _decide: unknown,
        o: { keepClaim: boolean },
      ) => {
        kept.push([orderId, o.keepClaim]);
        // The first saga is still in its slot while the second records its step.
        if (orderId === "a") await firstHeld;
        return { kind: "parked", transition: "next" } satisfies RecordOutcome;
      },
    } as unknown as OrdersStore;
    const worker = createSagaWorker({
      store: scripted,
      runStep: async () => () => ({ kind: "next", step: "AUTHORIZE" }),
      onChange: () => {},
      logger: t.logger,
      registry: new Registry(),
      concurrency: 1,
      pollMs: 60_000,
      leaseMs: LEASE_MS,
    });
    const a = worker.adopt({ saga: sagaRow({ order_id: "a" }), record });
    await new Promise((r) => setImmediate(r));
    const b = await worker.adopt({ saga: sagaRow({ order_id: "b" }), record });
    releaseFirst();
    assert.equal(await a, undefined, "not terminal");
    assert.equal(b, undefined);
    assert.deepEqual(kept, [
      ["a", true],
      ["b", false],
    ]);
    await worker.stop();
  });

  test("resolves with the order as committed when the first step ends it", async () => {
    const pending = { order: { id: "c", status: "PENDING" }, items: [] } as unknown as OrderRecord;
    const cancelled = {
      order: { id: "c", status: "CANCELLED", cancel_code: "OUT_OF_STOCK" },
      items: [],
    } as unknown as OrderRecord;
    const scripted = {
      claimDue: async () => [],
      record: async () =>
        ({ kind: "finished", transition: "cancel", record: cancelled }) satisfies RecordOutcome,
    } as unknown as OrdersStore;
    const woken: string[] = [];
    const worker = createSagaWorker({
      store: scripted,
      runStep: async () => () => ({ kind: "cancel" }),
      onChange: (id) => woken.push(id),
      logger: t.logger,
      registry: new Registry(),
      concurrency: 1,
      pollMs: 60_000,
      leaseMs: LEASE_MS,
    });
    assert.equal(
      await worker.adopt({ saga: sagaRow({ order_id: "c" }), record: pending }),
      cancelled,
    );
    assert.deepEqual(woken, ["c"], "watchers are told too");
    await worker.stop();
  });
});

describe("the compensation", () => {
  const releasing = (over: Partial<SagaRow> = {}): SagaRow =>
    sagaRow({
      step: "RELEASE",
      cancel_code: "OUT_OF_STOCK",
      cancel_reason: "out of stock: SKU-1",
      ...over,
    });
  const priced = {
    order: { total_units: 5n, total_nanos: 0 },
    items: [],
  } as unknown as OrderRecord;
  const deps = {
    inventory: { releaseReservation: async () => ({}) },
    stepTimeoutMs: 1_000,
    retryBaseMs: 10,
    retryMaxMs: 100,
    maxAttempts: 3,
  } as unknown as Omit<SagaDeps, "logger">;

  test("an order that never reached its authorization is cancelled once its stock is released", async () => {
    const saga = releasing();
    const decide = await runStep(saga, priced, { ...deps, logger: t.logger });
    assert.deepEqual(decide(saga), { kind: "cancel", changes: { stock_state: "RELEASED" } });
  });

  test("a payment that may be held still goes to VOID", async () => {
    for (const over of [
      { payment_state: "AUTHORIZED", payment_id: randomUUID() },
      { payment_state: "NONE", auth_sent: true },
      { payment_state: "CAPTURED", payment_id: randomUUID() },
    ] as const) {
      const saga = releasing(over);
      const decide = await runStep(saga, priced, { ...deps, logger: t.logger });
      assert.deepEqual(
        decide(saga),
        { kind: "next", step: "VOID", changes: { stock_state: "RELEASED" } },
        JSON.stringify(over),
      );
    }
  });

  test("nothing to void: free orders, declined, voided or refunded payments", () => {
    const free = {
      order: { total_units: 0n, total_nanos: 0 },
      items: [],
    } as unknown as OrderRecord;
    assert.equal(nothingToVoid(releasing({ payment_state: "AUTHORIZED" }), free), true);
    for (const payment_state of ["DECLINED", "VOIDED", "REFUNDED"] as const) {
      assert.equal(nothingToVoid(releasing({ payment_state }), priced), true, payment_state);
    }
    assert.equal(nothingToVoid(releasing({ payment_state: "AUTHORIZED" }), priced), false);
  });
});
