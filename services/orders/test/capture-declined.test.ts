import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import type { Sql } from "@meshmart/kit";
import {
  OrderCancelledSchema,
  OrderConfirmedSchema,
  OrderPlacedSchema,
} from "@meshmart/kit/gen/meshmart/orders/v1/events_pb.js";
import { CancelCode, OrderStatus } from "@meshmart/kit/gen/meshmart/orders/v1/orders_pb.js";
import { createTestDatabase, type TestDatabase } from "@meshmart/kit/testing";
import { createPaymentsStore, type PaymentsStore } from "@meshmart/payments/store";
import { planCancel } from "../src/saga.js";
import type { SagaRow } from "../src/store.js";
import {
  CARDS,
  card,
  eventually,
  type Mesh,
  newCardKey,
  newCustomer,
  ordersSql,
  type RunningOrders,
  startMesh,
  startTestOrders,
  waitForTerminal,
} from "./support/mesh.js";

/** The test card that payments authorizes but whose capture its processor declines. */
const CAPTURE_DECLINED = "4000000000000341";

// Compensation after a successful authorization, end to end (real orders, inventory and
// payments, each on its own database): a capture the processor declines, and a customer
// who cancels while the capture is in flight. Both must leave nothing captured, the ledger
// balanced and every unit of stock back.
describe("compensation after the authorization", () => {
  let mesh: Mesh;
  let db: TestDatabase;
  let orders: RunningOrders;
  let sql: Sql;
  let payments: PaymentsStore;

  before(async () => {
    mesh = await startMesh("orders_capture");
    db = await createTestDatabase("orders_capture");
    orders = await startTestOrders(mesh, db.url, newCardKey());
    sql = ordersSql(db.url);
    payments = createPaymentsStore(mesh.paymentsSql, mesh.names);
  });
  after(async () => {
    await orders?.close();
    await sql?.end({ timeout: 1 });
    await db?.drop();
    await mesh?.close();
  });

  /** The order's payments, their ledger postings in order, and what it nets. */
  async function moneyOf(orderId: string) {
    const rows = await mesh.paymentsSql<{ id: string; status: string; captured_minor: bigint }[]>`
      select id, status, captured_minor from payments where order_id = ${orderId}`;
    const postings = await mesh.paymentsSql<{ kind: string }[]>`
      select t.kind from ledger_transactions t join payments p on p.id = t.payment_id
      where p.order_id = ${orderId} order by t.created_at, t.id`;
    const [net] = await payments.netCapturedByOrder([orderId]);
    return {
      payments: rows.map((r) => [r.status, r.captured_minor]),
      paymentIds: rows.map((r) => r.id),
      postings: postings.map((p) => p.kind),
      captured: net?.captured_minor ?? 0n,
      net: net?.net_minor ?? 0n,
    };
  }

  async function sagaOf(orderId: string) {
    const [saga] = await sql<
      { step: string; stock_state: string; payment_state: string; claim_token: string | null }[]
    >`select step, stock_state, payment_state, claim_token from order_sagas where order_id = ${orderId}`;
    return saga;
  }

  /** The last word of the subject of each event the order published (placed, cancelled, …). */
  async function orderEvents(orderId: string): Promise<string[]> {
    const rows = await sql<{ event_type: string; subject: string; payload: Uint8Array }[]>`
      select event_type, subject, payload from event_outbox order by seq`;
    const schemas = [OrderPlacedSchema, OrderConfirmedSchema, OrderCancelledSchema];
    return rows
      .filter((r) => {
        const schema = schemas.find((s) => s.typeName === r.event_type);
        return schema !== undefined && fromBinary(schema, r.payload).orderId === orderId;
      })
      .map((r) => r.subject.split(".").at(-1) ?? "");
  }

  test("a declined capture: CANCELLED PAYMENT_DECLINED, authorization voided, stock released, nothing captured", async () => {
    const lamp = await mesh.product({ units: 19n, nanos: 900_000_000, stock: 5n });
    const other = await mesh.product({ units: 2n, stock: 1n });
    const ann = await newCustomer(mesh);
    const { order } = await orders.client.placeOrder(
      {
        requestId: randomUUID(),
        items: [
          { productId: lamp.id, quantity: 2 },
          { productId: other.id, quantity: 1 },
        ],
        payment: { card: card(CAPTURE_DECLINED) },
      },
      ann.options,
    );
    assert.ok(order);
    const done = await waitForTerminal(orders.client, order.id, ann.options);
    assert.equal(done.status, OrderStatus.CANCELLED);
    assert.equal(done.cancelCode, CancelCode.PAYMENT_DECLINED);
    assert.equal(done.cancelReason, "payment declined at capture: card declined");

    // Every unit back: nothing committed, nothing left reserved.
    for (const [product, onHand] of [
      [lamp, 5n],
      [other, 1n],
    ] as const) {
      const stock = await mesh.stockOf(product.id);
      assert.deepEqual([stock.onHand, stock.reserved, stock.available], [onHand, 0n, onHand]);
    }
    // The authorization was voided, never captured; the ledger nets zero and balances.
    const money = await moneyOf(order.id);
    assert.deepEqual(money.payments, [["voided", 0n]]);
    assert.deepEqual(money.postings, ["authorize", "void"]);
    assert.deepEqual([money.captured, money.net], [0n, 0n]);
    assert.deepEqual(await payments.ledgerImbalances(), []);
    // The order names the payment it voided, as every order that got an authorization does.
    assert.deepEqual([done.paymentId], money.paymentIds);

    assert.deepEqual(await sagaOf(order.id), {
      step: "DONE",
      stock_state: "RELEASED",
      payment_state: "VOIDED",
      claim_token: null,
    });
    assert.deepEqual(await orderEvents(order.id), ["placed", "cancelled"]);
    assert.doesNotMatch(orders.logs.text(), new RegExp(CAPTURE_DECLINED));
  });

  test("CancelOrder while the capture is in flight: refunded, released, CUSTOMER_REQUESTED", async () => {
    const chair = await mesh.product({ units: 80n, stock: 3n });
    const bo = await newCustomer(mesh);
    // Payments calls its processor through this object at call time, so a held capture
    // keeps the saga's CAPTURE step in flight until the test lets it through.
    const provider = mesh.processor.provider;
    const capture = provider.capture;
    let open: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    provider.capture = async (input) => {
      await gate;
      return capture(input);
    };
    try {
      const { order } = await orders.client.placeOrder(
        {
          requestId: randomUUID(),
          items: [{ productId: chair.id, quantity: 2 }],
          payment: { card: card(CARDS.approved) },
        },
        bo.options,
      );
      assert.ok(order);
      await eventually("the capture to be in flight", async () => {
        const saga = await sagaOf(order.id);
        return saga?.step === "CAPTURE" && saga.claim_token !== null ? true : undefined;
      });
      // Capture comes before the commit: the units are still only reserved.
      const held = await mesh.stockOf(chair.id);
      assert.deepEqual([held.onHand, held.reserved], [3n, 2n]);
      const cancelling = orders.client.cancelOrder(
        { orderId: order.id, reason: "changed my mind" },
        bo.options,
      );
      await eventually("the cancellation to be flagged", async () => {
        const [saga] = await sql<{ cancel_requested: boolean }[]>`
          select cancel_requested from order_sagas where order_id = ${order.id}`;
        return saga?.cancel_requested === true ? true : undefined;
      });
      open();
      const { order: cancelled } = await cancelling;
      assert.equal(cancelled?.status, OrderStatus.CANCELLED);
      assert.equal(cancelled?.cancelCode, CancelCode.CUSTOMER_REQUESTED);
      assert.equal(cancelled?.cancelReason, "cancelled by the customer: changed my mind");

      const stock = await mesh.stockOf(chair.id);
      assert.deepEqual([stock.onHand, stock.reserved], [3n, 0n]);
      // The capture went through before the cancellation could act: it was refunded.
      const money = await moneyOf(order.id);
      assert.deepEqual(money.payments, [["refunded", 16_000n]]);
      assert.deepEqual(money.postings, ["authorize", "capture", "refund"]);
      assert.deepEqual([money.captured, money.net], [16_000n, 0n]);
      assert.deepEqual(await payments.ledgerImbalances(), []);
      assert.deepEqual(await sagaOf(order.id), {
        step: "DONE",
        stock_state: "RELEASED",
        payment_state: "REFUNDED",
        claim_token: null,
      });
      assert.deepEqual(await orderEvents(order.id), ["placed", "cancelled"]);
    } finally {
      open();
      provider.capture = capture;
    }
  });

  test("a good card still confirms: captured once, then the stock committed", async () => {
    const mug = await mesh.product({ units: 7n, stock: 4n });
    const cy = await newCustomer(mesh);
    const { order } = await orders.client.placeOrder(
      {
        requestId: randomUUID(),
        items: [{ productId: mug.id, quantity: 3 }],
        payment: { card: card(CARDS.approved) },
      },
      cy.options,
    );
    assert.ok(order);
    const done = await waitForTerminal(orders.client, order.id, cy.options);
    assert.equal(done.status, OrderStatus.CONFIRMED);
    const stock = await mesh.stockOf(mug.id);
    assert.deepEqual([stock.onHand, stock.reserved], [1n, 0n]);
    const money = await moneyOf(order.id);
    assert.deepEqual(money.payments, [["captured", 2_100n]]);
    assert.deepEqual([money.captured, money.net], [2_100n, 2_100n]);
  });
});

test("a customer may cancel until the commit may have been sent, the capture included", () => {
  const saga = (step: SagaRow["step"], commitSent = false) =>
    ({ step, commit_sent: commitSent }) as SagaRow;
  // The capture runs before the commit: cancelling then unwinds the order (a capture in
  // flight is flagged, and its result refunded).
  assert.equal(planCancel(saga("CAPTURE"), false), "compensate");
  assert.equal(planCancel(saga("CAPTURE"), true), "flag");
  assert.equal(planCancel(saga("COMMIT_STOCK"), false), "compensate");
  assert.equal(planCancel(saga("COMMIT_STOCK", true), true), "too_late");
  // A saga that committed before capturing (the older order of the steps) is past undoing.
  assert.equal(planCancel(saga("CAPTURE", true), true), "too_late");
});
