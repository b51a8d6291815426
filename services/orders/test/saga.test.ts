import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import type { Sql } from "@meshmart/kit";
import { ReservationStatus } from "@meshmart/kit/gen/meshmart/inventory/v1/inventory_pb.js";
import {
  OrderCancelledSchema,
  OrderConfirmedSchema,
  OrderPlacedSchema,
} from "@meshmart/kit/gen/meshmart/orders/v1/events_pb.js";
import { CancelCode, OrderStatus } from "@meshmart/kit/gen/meshmart/orders/v1/orders_pb.js";
import { PaymentStatus } from "@meshmart/kit/gen/meshmart/payments/v1/payments_pb.js";
import {
  createTestDatabase,
  rejection,
  type TestDatabase,
  violationsOf,
} from "@meshmart/kit/testing";
import {
  CARDS,
  card,
  eventually,
  type Mesh,
  newCardKey,
  newCustomer,
  ordersSql,
  type RunningOrders,
  STEP_TIMEOUT_MS,
  settleOrders,
  startMesh,
  startTestOrders,
  waitForTerminal,
} from "./support/mesh.js";

/** Longest a PENDING order of a burst may sit unchanged, in saga step deadlines. */
const IDLE_STEPS = 10;
/** A WatchOrder stream must see a terminal state this soon after its commit. */
const WATCH_LATE_MS = 5_000;

/** A protobuf Timestamp as epoch ms. */
function timestampMs(ts: { seconds: bigint; nanos: number } | undefined): number {
  return ts === undefined ? 0 : Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6);
}

// The saga end to end: the real orders (startOrders, gRPC) against the real catalog,
// inventory and payments, each on its own database.
describe("order saga", () => {
  let mesh: Mesh;
  let db: TestDatabase;
  let orders: RunningOrders;
  let sql: Sql;

  before(async () => {
    mesh = await startMesh("orders_saga");
    db = await createTestDatabase("orders_saga");
    orders = await startTestOrders(mesh, db.url, newCardKey());
    sql = ordersSql(db.url);
  });
  after(async () => {
    await orders?.close();
    await sql?.end({ timeout: 1 });
    await db?.drop();
    await mesh?.close();
  });

  async function paymentsOf(orderId: string) {
    return mesh.paymentsSql<{ id: string; status: string; captured_minor: bigint }[]>`
      select id, status, captured_minor from payments where order_id = ${orderId}`;
  }

  /** Saga steps run so far by each replica, from their metrics. */
  async function stepsRecorded(replicas: RunningOrders[]) {
    const perReplica: number[] = [];
    let lost = 0;
    for (const replica of replicas) {
      const text = await (await fetch(`${replica.host.adminUrl}/metrics`)).text();
      let n = 0;
      for (const line of text.split("\n")) {
        const match = /^orders_saga_steps_total\{([^}]*)\} (\d+)/.exec(line);
        if (match === null) continue;
        // A retry re-runs a step on purpose (a deadline under load); what must happen once
        // per step is its result being recorded, and never by a replica whose claim lapsed.
        if (match[1]?.includes('transition="lost"')) lost += Number(match[2]);
        else if (!match[1]?.includes('transition="retry"')) n += Number(match[2]);
      }
      perReplica.push(n);
    }
    return { perReplica, lost, total: perReplica.reduce((a, b) => a + b, 0) };
  }

  async function outbox(orderId: string) {
    const rows = await sql<{ event_type: string; subject: string; payload: Uint8Array }[]>`
      select event_type, subject, payload from event_outbox order by seq`;
    return rows
      .map((r) => {
        const schema =
          r.event_type === OrderPlacedSchema.typeName
            ? OrderPlacedSchema
            : r.event_type === OrderConfirmedSchema.typeName
              ? OrderConfirmedSchema
              : OrderCancelledSchema;
        return { subject: r.subject, event: fromBinary(schema, r.payload) };
      })
      .filter((e) => e.event.orderId === orderId);
  }

  test("a good card: CONFIRMED, priced by catalog, stock committed, payment captured once", async () => {
    const mug = await mesh.product({ units: 12n, nanos: 500_000_000, stock: 10n });
    const beans = await mesh.product({ units: 3n, nanos: 250_000_000, stock: 5n });
    const alice = await newCustomer(mesh);
    const { order: placed } = await orders.client.placeOrder(
      {
        requestId: randomUUID(),
        items: [
          { productId: mug.id, quantity: 2 },
          { productId: beans.id, quantity: 3 },
        ],
        payment: { card: card(CARDS.approved) },
      },
      alice.options,
    );
    assert.ok(placed);
    assert.equal(placed.userId, alice.userId);
    assert.equal(placed.cardLast4, "4242");
    // 2 x 12.50 + 3 x 3.25 = 34.75, from catalog's prices.
    assert.deepEqual(
      { units: placed.total?.units, nanos: placed.total?.nanos, cur: placed.total?.currencyCode },
      { units: 34n, nanos: 750_000_000, cur: "EUR" },
    );
    assert.deepEqual(
      placed.items.map((i) => [i.sku, i.quantity, i.lineTotal?.units, i.lineTotal?.nanos]),
      [
        [mug.sku, 2, 25n, 0],
        [beans.sku, 3, 9n, 750_000_000],
      ],
    );

    const done = await waitForTerminal(orders.client, placed.id, alice.options);
    assert.equal(done.status, OrderStatus.CONFIRMED);
    assert.equal(done.cancelCode, CancelCode.UNSPECIFIED);
    assert.notEqual(done.paymentId, "");

    const mugStock = await mesh.stockOf(mug.id);
    assert.deepEqual([mugStock.onHand, mugStock.reserved], [8n, 0n]);
    const beanStock = await mesh.stockOf(beans.id);
    assert.deepEqual([beanStock.onHand, beanStock.reserved], [2n, 0n]);

    const { payment } = await mesh.payments.getPayment({ paymentId: done.paymentId });
    assert.equal(payment?.status, PaymentStatus.CAPTURED);
    assert.deepEqual(
      [payment?.capturedAmount?.units, payment?.capturedAmount?.nanos],
      [34n, 750_000_000],
    );
    assert.equal((await paymentsOf(placed.id)).length, 1);

    // The card left the saga once authorized; it is nowhere in orders' logs.
    const [saga] = await sql<{ step: string; card_sealed: Buffer | null }[]>`
      select step, card_sealed from order_sagas where order_id = ${placed.id}`;
    assert.deepEqual(saga, { step: "DONE", card_sealed: null });
    assert.doesNotMatch(orders.logs.text(), new RegExp(CARDS.approved));

    const events = await outbox(placed.id);
    assert.deepEqual(
      events.map((e) => e.subject),
      [
        `${mesh.names.namespace}.orders.order.placed`,
        `${mesh.names.namespace}.orders.order.confirmed`,
      ],
    );
    const confirmed = events[1]?.event;
    assert.equal(confirmed?.order?.status, OrderStatus.CONFIRMED);
    assert.equal(confirmed?.userId, alice.userId);
    // The relay publishes them.
    await eventually("the relay to publish the order's events", async () => {
      const [row] = await sql<{ n: bigint }[]>`
        select count(*) as n from event_outbox where published_at is null`;
      return row?.n === 0n ? true : undefined;
    });
  });

  test("a declined card: CANCELLED PAYMENT_DECLINED, stock released, nothing captured", async () => {
    const kettle = await mesh.product({ units: 40n, stock: 3n });
    const bob = await newCustomer(mesh);
    const { order } = await orders.client.placeOrder(
      {
        requestId: randomUUID(),
        items: [{ productId: kettle.id, quantity: 2 }],
        payment: { card: card(CARDS.insufficientFunds) },
      },
      bob.options,
    );
    assert.ok(order);
    const done = await waitForTerminal(orders.client, order.id, bob.options);
    assert.equal(done.status, OrderStatus.CANCELLED);
    assert.equal(done.cancelCode, CancelCode.PAYMENT_DECLINED);
    assert.match(done.cancelReason, /payment declined: .*insufficient funds/);
    assert.equal(done.paymentId, "");

    const stock = await mesh.stockOf(kettle.id);
    assert.deepEqual([stock.onHand, stock.reserved, stock.available], [3n, 0n, 3n]);
    const payments = await paymentsOf(order.id);
    assert.deepEqual(
      payments.map((p) => [p.status, p.captured_minor]),
      [["failed", 0n]],
    );
    const events = await outbox(order.id);
    assert.deepEqual(
      events.map((e) => e.subject.split(".").slice(-1)[0]),
      ["placed", "cancelled"],
    );
    assert.equal(events[1]?.event.order?.cancelCode, CancelCode.PAYMENT_DECLINED);
  });

  test("too little stock: CANCELLED OUT_OF_STOCK naming the SKU, no payment attempted", async () => {
    const plenty = await mesh.product({ units: 1n, stock: 100n });
    const scarce = await mesh.product({ units: 5n, stock: 1n });
    const carol = await newCustomer(mesh);
    const { order } = await orders.client.placeOrder(
      {
        requestId: randomUUID(),
        items: [
          { productId: plenty.id, quantity: 1 },
          { productId: scarce.id, quantity: 2 },
        ],
        payment: { card: card() },
      },
      carol.options,
    );
    assert.ok(order);
    // PlaceOrder runs the reservation itself: its answer already says so.
    assert.equal(order.status, OrderStatus.CANCELLED, "PlaceOrder answered before the refusal");
    assert.equal(order.cancelCode, CancelCode.OUT_OF_STOCK);
    const done = await waitForTerminal(orders.client, order.id, carol.options);
    assert.equal(done.status, OrderStatus.CANCELLED);
    assert.equal(done.cancelCode, CancelCode.OUT_OF_STOCK);
    assert.equal(done.cancelReason, `out of stock: ${scarce.sku}`);
    assert.equal((await mesh.stockOf(plenty.id)).reserved, 0n);
    assert.equal((await mesh.stockOf(scarce.id)).available, 1n);
    assert.equal((await paymentsOf(order.id)).length, 0);
  });

  test("a product inventory just refused: an order wanting more is cancelled without asking again", async () => {
    const scarce = await mesh.product({ units: 3n, stock: 1n });
    const dave = await newCustomer(mesh);
    // A replica that remembers refusals for a minute, so the test does not race the window.
    const hinted = await startTestOrders(mesh, db.url, orders.cardKey, {
      SOLD_OUT_HINT_MS: "60000",
    });
    const place = async (quantity: number) => {
      const { order } = await hinted.client.placeOrder(
        {
          requestId: randomUUID(),
          items: [{ productId: scarce.id, quantity }],
          payment: { card: card() },
        },
        dave.options,
      );
      assert.ok(order);
      return order;
    };
    try {
      const first = await place(2);
      assert.equal(first.cancelCode, CancelCode.OUT_OF_STOCK, "inventory has 1");
      const second = await place(2);
      assert.equal(second.status, OrderStatus.CANCELLED);
      assert.equal(second.cancelCode, CancelCode.OUT_OF_STOCK);
      assert.equal(second.cancelReason, `out of stock: ${scarce.sku}`);
      // Inventory was asked for the first order only.
      const { reservation } = await mesh.inventory.getReservation(
        { orderId: first.id },
        mesh.admin,
      );
      assert.equal(reservation?.status, ReservationStatus.RELEASED);
      const unasked = await rejection(
        mesh.inventory.getReservation({ orderId: second.id }, mesh.admin),
      );
      assert.equal(unasked.code, Code.NotFound, "the second order was never sent to inventory");
      // Born cancelled: its saga is already done and holds no card, and its two events
      // were written together, placed before cancelled.
      const [saga] = await sql<{ step: string; claim_token: string | null; card: boolean }[]>`
        select step, claim_token, card_sealed is not null as card
        from order_sagas where order_id = ${second.id}`;
      assert.deepEqual({ ...saga }, { step: "DONE", claim_token: null, card: false });
      const events = await outbox(second.id);
      assert.deepEqual(
        events.map((e) => e.subject.split(".").at(-1)),
        ["placed", "cancelled"],
      );
      const fetched = (await hinted.client.getOrder({ orderId: second.id }, dave.options)).order;
      assert.equal(fetched?.status, OrderStatus.CANCELLED);
      // An order for no more than what inventory said it had still asks, and gets it.
      const third = await place(1);
      assert.equal(third.status, OrderStatus.PENDING);
      const done = await waitForTerminal(hinted.client, third.id, dave.options);
      assert.equal(done.status, OrderStatus.CONFIRMED);
    } finally {
      await hinted.close();
    }
  });

  test("PlaceOrder is idempotent on (caller, request_id)", async () => {
    const lamp = await mesh.product({ units: 20n, stock: 10n });
    const dave = await newCustomer(mesh);
    const erin = await newCustomer(mesh);
    const requestId = randomUUID();
    const request = {
      requestId,
      items: [{ productId: lamp.id, quantity: 1 }],
      payment: { card: card() },
    };
    const first = (await orders.client.placeOrder(request, dave.options)).order;
    const retry = (await orders.client.placeOrder(request, dave.options)).order;
    assert.equal(retry?.id, first?.id);
    assert.ok(first);
    await waitForTerminal(orders.client, first.id, dave.options);
    // A retry after the saga ended answers the order as it is now, and charges nothing more.
    const late = (await orders.client.placeOrder(request, dave.options)).order;
    assert.equal(late?.id, first.id);
    assert.equal(late?.status, OrderStatus.CONFIRMED);
    assert.equal((await paymentsOf(first.id)).length, 1);
    assert.equal((await mesh.stockOf(lamp.id)).onHand, 9n);

    const reused = await rejection(
      orders.client.placeOrder(
        { ...request, items: [{ productId: lamp.id, quantity: 2 }] },
        dave.options,
      ),
    );
    assert.equal(reused.code, Code.FailedPrecondition);
    // request_id is scoped to the caller: another customer's same id is a new order.
    const other = (await orders.client.placeOrder(request, erin.options)).order;
    assert.ok(other);
    assert.notEqual(other.id, first.id);
    await waitForTerminal(orders.client, other.id, erin.options);

    // Once the product is gone from the catalog (pricing fails), a retry is still
    // recognised by its request id, and a reuse still refused.
    await mesh.catalog.deleteProduct({ productId: lamp.id }, mesh.admin);
    const afterDelete = (await orders.client.placeOrder(request, dave.options)).order;
    assert.equal(afterDelete?.id, first.id);
    assert.equal(afterDelete?.status, OrderStatus.CONFIRMED);
    const reusedAfterDelete = await rejection(
      orders.client.placeOrder(
        { ...request, items: [{ productId: lamp.id, quantity: 2 }] },
        dave.options,
      ),
    );
    assert.equal(reusedAfterDelete.code, Code.FailedPrecondition);
    const stranger = await rejection(
      orders.client.placeOrder({ ...request, requestId: randomUUID() }, dave.options),
    );
    assert.equal(stranger.code, Code.NotFound);
  });

  test("200 concurrent orders for 50 in stock: exactly 50 confirmed, stock 0, never negative", async () => {
    const lamp = await mesh.product({ units: 9n, stock: 50n });
    const buyers = await Promise.all(Array.from({ length: 8 }, () => newCustomer(mesh)));
    const buyerOf = (i: number) => {
      const buyer = buyers[i % buyers.length];
      assert.ok(buyer);
      return buyer;
    };
    let lowest = 50n;
    let sampling = true;
    // Inventory's check constraint already forbids negative stock; this watches it from the
    // outside as a client would, at a rate that does not itself load the mesh.
    const sampler = (async () => {
      while (sampling) {
        const { available } = await mesh.stockOf(lamp.id);
        if (available < lowest) lowest = available;
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    try {
      const placed = await Promise.all(
        Array.from({ length: 200 }, (_, i) =>
          orders.client.placeOrder(
            {
              requestId: randomUUID(),
              items: [{ productId: lamp.id, quantity: 1 }],
              payment: { card: card() },
            },
            buyerOf(i).options,
          ),
        ),
      );
      // Waits on progress, not on the clock: on a loaded machine the burst may take a while,
      // but no order may sit still for long (its saga's steps each have STEP_TIMEOUT_MS).
      const settled = await settleOrders(
        orders.client,
        sql,
        placed.map(({ order }, i) => {
          assert.ok(order);
          return { id: order.id, options: buyerOf(i).options };
        }),
        { idleLimitMs: IDLE_STEPS * STEP_TIMEOUT_MS },
      );
      const outcomes = settled.map((s) => s.order);
      const confirmed = outcomes.filter((o) => o.status === OrderStatus.CONFIRMED);
      const cancelled = outcomes.filter((o) => o.status === OrderStatus.CANCELLED);
      assert.equal(confirmed.length, 50);
      assert.equal(cancelled.length, 150);
      const codes = [
        ...new Set(cancelled.map((o) => `${CancelCode[o.cancelCode]}: ${o.cancelReason}`)),
      ];
      assert.ok(
        cancelled.every((o) => o.cancelCode === CancelCode.OUT_OF_STOCK),
        codes.join("; "),
      );
      // Each watcher learned the end from the change itself, not from WatchOrder's fallback
      // re-read WATCH_FALLBACK_MS (10 s) later.
      const late = settled
        .map((s) => ({ id: s.order.id, ms: s.receivedAt - timestampMs(s.order.updateTime) }))
        .filter((s) => s.ms > WATCH_LATE_MS);
      assert.deepEqual(late, [], "terminal states delivered late");
      const stock = await mesh.stockOf(lamp.id);
      assert.equal(stock.onHand, 0n);
      assert.equal(stock.reserved, 0n);
    } finally {
      sampling = false;
      await sampler;
    }
    assert.ok(lowest >= 0n, `available went to ${lowest}`);
  });

  test("concurrent retries of one PlaceOrder make one order", async () => {
    const vase = await mesh.product({ units: 15n, stock: 10n });
    const mallory = await newCustomer(mesh);
    const request = {
      requestId: randomUUID(),
      items: [{ productId: vase.id, quantity: 1 }],
      payment: { card: card() },
    };
    const answers = await Promise.all(
      Array.from({ length: 8 }, () => orders.client.placeOrder(request, mallory.options)),
    );
    const ids = new Set(answers.map((a) => a.order?.id));
    assert.equal(ids.size, 1);
    const [id] = [...ids];
    assert.ok(id);
    await waitForTerminal(orders.client, id, mallory.options);
    assert.equal((await mesh.stockOf(vase.id)).onHand, 9n);
    assert.equal((await paymentsOf(id)).length, 1);
  });

  test("a product inventory does not stock: CANCELLED PRODUCT_UNAVAILABLE", async () => {
    const ghost = await mesh.product({ units: 3n, stock: null });
    const stocked = await mesh.product({ units: 3n, stock: 3n });
    const nina = await newCustomer(mesh);
    const { order } = await orders.client.placeOrder(
      {
        requestId: randomUUID(),
        items: [
          { productId: stocked.id, quantity: 1 },
          { productId: ghost.id, quantity: 1 },
        ],
        payment: { card: card() },
      },
      nina.options,
    );
    assert.ok(order);
    const done = await waitForTerminal(orders.client, order.id, nina.options);
    assert.equal(done.cancelCode, CancelCode.PRODUCT_UNAVAILABLE);
    assert.equal(done.cancelReason, `product unavailable: ${ghost.sku}`);
    assert.equal((await mesh.stockOf(stocked.id)).reserved, 0n);
  });

  test("free products confirm without a payment; mixed currencies are refused", async () => {
    const sticker = await mesh.product({ units: 0n, stock: 10n });
    const oscar = await newCustomer(mesh);
    const { order } = await orders.client.placeOrder(
      {
        requestId: randomUUID(),
        items: [{ productId: sticker.id, quantity: 2 }],
        payment: { card: card(CARDS.declined) },
      },
      oscar.options,
    );
    assert.ok(order);
    const done = await waitForTerminal(orders.client, order.id, oscar.options);
    assert.equal(done.status, OrderStatus.CONFIRMED);
    assert.equal(done.paymentId, "");
    assert.equal((await paymentsOf(order.id)).length, 0);
    assert.equal((await mesh.stockOf(sticker.id)).onHand, 8n);

    const dollars = await mesh.product({ units: 1n, stock: 1n, currency: "USD" });
    const err = await rejection(
      orders.client.placeOrder(
        {
          requestId: randomUUID(),
          items: [
            { productId: sticker.id, quantity: 1 },
            { productId: dollars.id, quantity: 1 },
          ],
          payment: { card: card() },
        },
        oscar.options,
      ),
    );
    assert.equal(err.code, Code.FailedPrecondition);
  });

  test("two replicas share the sagas and never run a step twice", async () => {
    const second = await startTestOrders(mesh, db.url, orders.cardKey);
    try {
      const soap = await mesh.product({ units: 2n, stock: 1_000n });
      const peggy = await newCustomer(mesh);
      const before = await stepsRecorded([orders, second]);
      const placed = await Promise.all(
        Array.from({ length: 40 }, (_, i) =>
          (i % 2 === 0 ? orders : second).client.placeOrder(
            {
              requestId: randomUUID(),
              items: [{ productId: soap.id, quantity: 1 }],
              payment: { card: card() },
            },
            peggy.options,
          ),
        ),
      );
      for (const { order } of placed) {
        assert.ok(order);
        assert.equal(
          (await waitForTerminal(orders.client, order.id, peggy.options)).status,
          OrderStatus.CONFIRMED,
        );
      }
      const after = await stepsRecorded([orders, second]);
      // RESERVE, AUTHORIZE, COMMIT_STOCK, CAPTURE recorded once each per order, across both replicas.
      assert.equal(after.total - before.total, 4 * placed.length);
      assert.equal(after.lost, before.lost);
      assert.ok(
        after.perReplica.every((n, i) => n > (before.perReplica[i] ?? 0)),
        "both worked",
      );
      assert.equal((await mesh.stockOf(soap.id)).onHand, 960n);
    } finally {
      await second.close();
    }
  });

  test("PlaceOrder needs a caller and a valid request", async () => {
    const pot = await mesh.product({ units: 1n, stock: 1n });
    const request = {
      requestId: randomUUID(),
      items: [{ productId: pot.id, quantity: 1 }],
      payment: { card: card() },
    };
    const anonymous = await rejection(orders.client.placeOrder(request));
    assert.equal(anonymous.code, Code.Unauthenticated);
    const olga = await newCustomer(mesh);
    const invalid = await rejection(
      orders.client.placeOrder(
        {
          ...request,
          items: [
            { productId: pot.id, quantity: 1 },
            { productId: pot.id, quantity: 0 },
          ],
          payment: { card: { ...card(), number: "4242 4242" } },
        },
        olga.options,
      ),
    );
    assert.deepEqual(
      violationsOf(invalid)
        .map((v) => v.rule)
        .sort(),
      ["int32.gte_lte", "items.unique_products", "string.pattern"],
    );
    const [row] = await sql<{ n: bigint }[]>`
      select count(*) as n from orders where user_id = ${olga.userId}`;
    assert.equal(row?.n, 0n);
  });

  test("an unknown product is NOT_FOUND and no order is created", async () => {
    const frank = await newCustomer(mesh);
    const known = await mesh.product({ units: 1n, stock: 1n });
    const err = await rejection(
      orders.client.placeOrder(
        {
          requestId: randomUUID(),
          items: [
            { productId: known.id, quantity: 1 },
            { productId: randomUUID(), quantity: 1 },
          ],
          payment: { card: card() },
        },
        frank.options,
      ),
    );
    assert.equal(err.code, Code.NotFound);
    const [row] = await sql<{ n: bigint }[]>`
      select count(*) as n from orders where user_id = ${frank.userId}`;
    assert.equal(row?.n, 0n);
  });

  test("a customer sees only their own orders; an admin sees every order", async () => {
    const pen = await mesh.product({ units: 2n, stock: 50n });
    const grace = await newCustomer(mesh);
    const heidi = await newCustomer(mesh);
    const admin = await newCustomer(mesh, ["admin"]);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const { order } = await orders.client.placeOrder(
        {
          requestId: randomUUID(),
          items: [{ productId: pen.id, quantity: 1 }],
          payment: { card: card() },
        },
        grace.options,
      );
      assert.ok(order);
      ids.push(order.id);
    }
    const [firstId] = ids;
    assert.ok(firstId);

    const notYours = await rejection(orders.client.getOrder({ orderId: firstId }, heidi.options));
    assert.equal(notYours.code, Code.NotFound);
    const noCancel = await rejection(
      orders.client.cancelOrder({ orderId: firstId }, heidi.options),
    );
    assert.equal(noCancel.code, Code.NotFound);
    assert.equal(
      (await orders.client.listOrders({}, heidi.options)).orders.length,
      0,
      "heidi has no orders",
    );
    const anonymous = await rejection(orders.client.getOrder({ orderId: firstId }));
    assert.equal(anonymous.code, Code.Unauthenticated);
    assert.equal(
      (await orders.client.getOrder({ orderId: firstId }, admin.options)).order?.id,
      firstId,
    );

    // Newest first, two per page.
    const page1 = await orders.client.listOrders({ pageSize: 2 }, grace.options);
    assert.deepEqual(
      page1.orders.map((o) => o.id),
      [ids[2], ids[1]],
    );
    assert.notEqual(page1.nextPageToken, "");
    const page2 = await orders.client.listOrders(
      { pageSize: 2, pageToken: page1.nextPageToken },
      grace.options,
    );
    assert.deepEqual(
      page2.orders.map((o) => o.id),
      [ids[0]],
    );
    assert.equal(page2.nextPageToken, "");
    // A token is bound to the listing it came from.
    const foreign = await rejection(
      orders.client.listOrders({ pageToken: page1.nextPageToken }, heidi.options),
    );
    assert.equal(foreign.code, Code.InvalidArgument);
    // A cursor the client wrote itself (the unsigned format tokens once had) is refused,
    // naming page_token, instead of paging from wherever it points.
    const crafted = Buffer.from(
      JSON.stringify({ s: "9223372036854775807", o: grace.userId }),
    ).toString("base64url");
    const forged = await rejection(orders.client.listOrders({ pageToken: crafted }, grace.options));
    assert.deepEqual(violationsOf(forged), [{ path: "page_token", rule: "page_token.issued" }]);
    for (const id of ids) await waitForTerminal(orders.client, id, grace.options);
  });

  test("CancelOrder while the authorization is in flight: voided, released, CUSTOMER_REQUESTED", async () => {
    const chair = await mesh.product({ units: 99n, stock: 4n });
    const ivan = await newCustomer(mesh);
    mesh.processor.hold();
    let released = false;
    try {
      const { order } = await orders.client.placeOrder(
        {
          requestId: randomUUID(),
          items: [{ productId: chair.id, quantity: 3 }],
          payment: { card: card() },
        },
        ivan.options,
      );
      assert.ok(order);
      await eventually("the authorization to be in flight", async () => {
        const [saga] = await sql<{ step: string; claim_token: string | null }[]>`
          select step, claim_token from order_sagas where order_id = ${order.id}`;
        return saga?.step === "AUTHORIZE" && saga.claim_token !== null ? true : undefined;
      });
      assert.equal((await mesh.stockOf(chair.id)).reserved, 3n);
      const cancelling = orders.client.cancelOrder(
        { orderId: order.id, reason: "found a cheaper one" },
        ivan.options,
      );
      // The cancellation is recorded before the authorization answers.
      await eventually("the cancellation to be flagged", async () => {
        const [saga] = await sql<{ cancel_requested: boolean }[]>`
          select cancel_requested from order_sagas where order_id = ${order.id}`;
        return saga?.cancel_requested === true ? true : undefined;
      });
      mesh.processor.release();
      released = true;
      const { order: cancelled } = await cancelling;
      assert.equal(cancelled?.status, OrderStatus.CANCELLED);
      assert.equal(cancelled?.cancelCode, CancelCode.CUSTOMER_REQUESTED);
      assert.equal(cancelled?.cancelReason, "cancelled by the customer: found a cheaper one");

      const stock = await mesh.stockOf(chair.id);
      assert.deepEqual([stock.onHand, stock.reserved], [4n, 0n]);
      assert.deepEqual(
        (await paymentsOf(order.id)).map((p) => [p.status, p.captured_minor]),
        [["voided", 0n]],
      );
      // Cancelling again returns it unchanged.
      const again = await orders.client.cancelOrder({ orderId: order.id }, ivan.options);
      assert.equal(again.order?.cancelReason, cancelled?.cancelReason);
      assert.deepEqual(
        (await outbox(order.id)).map((e) => e.subject.split(".").slice(-1)[0]),
        ["placed", "cancelled"],
      );
    } finally {
      if (!released) mesh.processor.release();
    }
  });

  test("CancelOrder while the authorization is being retried: the outcome is learned, then voided", async () => {
    const desk = await mesh.product({ units: 150n, stock: 2n });
    const judy = await newCustomer(mesh);
    mesh.processor.setDown(true);
    try {
      const { order } = await orders.client.placeOrder(
        {
          requestId: randomUUID(),
          items: [{ productId: desk.id, quantity: 1 }],
          payment: { card: card() },
        },
        judy.options,
      );
      assert.ok(order);
      await eventually("the authorization to be retried", async () => {
        const [saga] = await sql<{ step: string; attempts: number }[]>`
          select step, attempts from order_sagas where order_id = ${order.id}`;
        return saga?.step === "AUTHORIZE" && saga.attempts >= 2 ? true : undefined;
      });
      const cancelling = orders.client.cancelOrder({ orderId: order.id }, judy.options);
      await eventually("the compensation to start", async () => {
        const [saga] = await sql<{ step: string }[]>`
          select step from order_sagas where order_id = ${order.id}`;
        return saga?.step === "VOID" ? true : undefined;
      });
      mesh.processor.setDown(false);
      const { order: cancelled } = await cancelling;
      assert.equal(cancelled?.status, OrderStatus.CANCELLED);
      assert.equal(cancelled?.cancelCode, CancelCode.CUSTOMER_REQUESTED);
      assert.equal((await mesh.stockOf(desk.id)).reserved, 0n);
      // Whatever payments decided for the unanswered authorization, no money is held.
      for (const p of await paymentsOf(order.id)) assert.notEqual(p.status, "authorized");
      for (const p of await paymentsOf(order.id)) assert.equal(p.captured_minor, 0n);
    } finally {
      mesh.processor.setDown(false);
    }
  });

  test("CancelOrder of a confirmed order is FAILED_PRECONDITION", async () => {
    const cup = await mesh.product({ units: 4n, stock: 5n });
    const ken = await newCustomer(mesh);
    const { order } = await orders.client.placeOrder(
      {
        requestId: randomUUID(),
        items: [{ productId: cup.id, quantity: 1 }],
        payment: { card: card() },
      },
      ken.options,
    );
    assert.ok(order);
    await waitForTerminal(orders.client, order.id, ken.options);
    const err = await rejection(orders.client.cancelOrder({ orderId: order.id }, ken.options));
    assert.equal(err.code, Code.FailedPrecondition);
  });

  test("WatchOrder on another replica is woken by the order's events, not by re-reading", async () => {
    // The watcher's replica never re-reads on its own within the test (a 60 s fallback) and
    // never runs sagas (a 60 s poll): only the event published when the first replica
    // confirms the order can end its stream in time.
    const watcher = await startTestOrders(mesh, db.url, orders.cardKey, {
      WATCH_FALLBACK_MS: "60000",
      SAGA_POLL_MS: "60000",
    });
    try {
      const jam = await mesh.product({ units: 4n, stock: 5n });
      const ida = await newCustomer(mesh);
      mesh.processor.hold();
      const { order } = await orders.client.placeOrder(
        {
          requestId: randomUUID(),
          items: [{ productId: jam.id, quantity: 1 }],
          payment: { card: card() },
        },
        ida.options,
      );
      assert.ok(order);
      const seen: OrderStatus[] = [];
      const watching = (async () => {
        for await (const res of watcher.client.watchOrder({ orderId: order.id }, ida.options)) {
          if (res.order !== undefined) seen.push(res.order.status);
        }
      })();
      await eventually("the first state", async () => (seen.length > 0 ? true : undefined));
      const released = Date.now();
      mesh.processor.release();
      await watching;
      assert.equal(seen.at(-1), OrderStatus.CONFIRMED);
      assert.ok(Date.now() - released < 15_000, "woken by the event, not the fallback");
    } finally {
      mesh.processor.release();
      await watcher.close();
    }
  });

  test("an open WatchOrder ends cleanly, at once, when its server shuts down", async () => {
    const watcher = await startTestOrders(mesh, db.url, orders.cardKey, {
      WATCH_FALLBACK_MS: "60000",
      SAGA_POLL_MS: "60000",
    });
    const fig = await mesh.product({ units: 3n, stock: 5n });
    const una = await newCustomer(mesh);
    mesh.processor.hold();
    try {
      const { order } = await orders.client.placeOrder(
        {
          requestId: randomUUID(),
          items: [{ productId: fig.id, quantity: 1 }],
          payment: { card: card() },
        },
        una.options,
      );
      assert.ok(order);
      let received = 0;
      const watching = (async () => {
        for await (const _ of watcher.client.watchOrder({ orderId: order.id }, una.options)) {
          received += 1;
        }
      })();
      await eventually("the first state", async () => (received > 0 ? true : undefined));
      const began = Date.now();
      await watcher.close();
      await watching; // ends without an error
      assert.ok(Date.now() - began < 5_000, `shutdown took ${Date.now() - began} ms`);
    } finally {
      mesh.processor.release();
    }
  });

  test("WatchOrder streams the order until it is terminal", async () => {
    const tea = await mesh.product({ units: 7n, stock: 5n });
    const leo = await newCustomer(mesh);
    mesh.processor.hold();
    try {
      const { order } = await orders.client.placeOrder(
        {
          requestId: randomUUID(),
          items: [{ productId: tea.id, quantity: 1 }],
          payment: { card: card() },
        },
        leo.options,
      );
      assert.ok(order);
      const seen: OrderStatus[] = [];
      const watching = (async () => {
        for await (const res of orders.client.watchOrder({ orderId: order.id }, leo.options)) {
          if (res.order !== undefined) seen.push(res.order.status);
        }
      })();
      await eventually("the first state", async () => (seen.length > 0 ? true : undefined));
      mesh.processor.release();
      await watching;
      assert.equal(seen[0], OrderStatus.PENDING);
      assert.equal(seen.at(-1), OrderStatus.CONFIRMED);
      assert.equal(seen.filter((s) => s !== OrderStatus.PENDING).length, 1);
    } finally {
      mesh.processor.release();
    }
  });
});
