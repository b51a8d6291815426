import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { Code } from "@connectrpc/connect";
import { errorInfosOf } from "@meshmart/kit";
import {
  CardBrand,
  DeclineCode,
  type Payment,
  PaymentStatus,
} from "@meshmart/kit/gen/meshmart/payments/v1/payments_pb.js";
import type { TransactionSql } from "postgres";
import type { LedgerEntry } from "../src/ledger.js";
import {
  authorizeRequest,
  card,
  columnsContaining,
  countRows,
  createPaymentsFixture,
  ledgerOf,
  outboxEvents,
  type PaymentsFixture,
  rejection,
  TEST_CARDS,
  violationsOf,
} from "./support/payments-fixture.js";

// Every PaymentService RPC, in memory through the production interceptor chain
// (validation, auth, errors), against a real database, with the fake PSP behind a counter.
let f: PaymentsFixture;

before(async () => {
  f = await createPaymentsFixture("payments_handlers");
});
after(() => f?.close());

const eur = (units: bigint, nanos = 0) => ({ currencyCode: "EUR", units, nanos });

async function authorized(
  overrides: Parameters<typeof authorizeRequest>[0] = {},
): Promise<Payment> {
  const { payment } = await f.client.authorizePayment(authorizeRequest(overrides));
  assert.equal(payment?.status, PaymentStatus.AUTHORIZED);
  return payment;
}

async function captured(overrides: Parameters<typeof authorizeRequest>[0] = {}): Promise<Payment> {
  const p = await authorized(overrides);
  const { payment } = await f.client.capturePayment({
    paymentId: p.id,
    idempotencyKey: `${p.orderId}:capture`,
  });
  assert.equal(payment?.status, PaymentStatus.CAPTURED);
  return payment;
}

describe("AuthorizePayment: test cards", () => {
  test("4242424242424242 is authorized: hold posted to the ledger, PaymentAuthorized in the outbox", async () => {
    const req = authorizeRequest({ amount: eur(25n, 500_000_000) });
    const { payment } = await f.client.authorizePayment(req);
    assert.ok(payment);
    assert.match(payment.id, /^[0-9a-f-]{36}$/);
    assert.equal(payment.orderId, req.orderId);
    assert.equal(payment.status, PaymentStatus.AUTHORIZED);
    assert.deepEqual(
      [payment.amount?.currencyCode, payment.amount?.units, payment.amount?.nanos],
      ["EUR", 25n, 500_000_000],
    );
    assert.equal(payment.capturedAmount?.units, 0n);
    assert.equal(payment.refundedAmount?.units, 0n);
    assert.equal(payment.cardLast4, "4242");
    assert.equal(payment.cardBrand, CardBrand.VISA);
    assert.equal(payment.declineCode, DeclineCode.UNSPECIFIED);
    assert.equal(payment.failureReason, "");
    assert.ok(payment.createTime);
    assert.deepEqual(await ledgerOf(f.sql, payment.id), [
      { kind: "authorize", memo: "", entries: ["Dr customer_hold 2550", "Cr psp_pending 2550"] },
    ]);
    const events = await outboxEvents(f.sql, payment.id);
    assert.deepEqual(
      events.map((e) => e.type),
      ["PaymentAuthorized"],
    );
    const [event] = events;
    assert.equal(event?.message.orderId, req.orderId);
    assert.equal((event?.message.payment as Payment | undefined)?.cardLast4, "4242");
  });

  const declines: [string, string, DeclineCode, string][] = [
    ["4000000000000002", TEST_CARDS.declined, DeclineCode.CARD_DECLINED, "card declined"],
    [
      "4000000000009995",
      TEST_CARDS.insufficientFunds,
      DeclineCode.INSUFFICIENT_FUNDS,
      "insufficient funds",
    ],
    ["any other number", "4111111111111111", DeclineCode.CARD_DECLINED, "card declined"],
  ];
  for (const [what, number, code, reason] of declines) {
    test(`${what} is a recorded decline (a response, not an error): ${DeclineCode[code]}`, async () => {
      const req = authorizeRequest({ card: card(number) });
      const { payment } = await f.client.authorizePayment(req);
      assert.ok(payment);
      assert.equal(payment.status, PaymentStatus.FAILED);
      assert.equal(payment.declineCode, code);
      assert.equal(payment.failureReason, reason);
      assert.equal(payment.cardLast4, number.slice(-4));
      // The decline is stored, money never moved, and PaymentFailed is announced.
      const read = await f.client.getPayment({ paymentId: payment.id });
      assert.equal(read.payment?.status, PaymentStatus.FAILED);
      assert.deepEqual(await ledgerOf(f.sql, payment.id), []);
      const events = await outboxEvents(f.sql, payment.id);
      assert.deepEqual(
        events.map((e) => [e.type, e.message.declineCode]),
        [["PaymentFailed", code]],
      );
    });
  }

  test("a past expiry is EXPIRED_CARD, even on the approved test card", async () => {
    const lastYear = new Date().getUTCFullYear() - 1;
    const { payment } = await f.client.authorizePayment(
      authorizeRequest({ card: card(TEST_CARDS.approved, { expYear: lastYear }) }),
    );
    assert.equal(payment?.status, PaymentStatus.FAILED);
    assert.equal(payment?.declineCode, DeclineCode.EXPIRED_CARD);
  });

  test("brand comes from the number's prefix", async () => {
    const cases: [string, CardBrand][] = [
      ["5555555555554444", CardBrand.MASTERCARD],
      ["2223003122003222", CardBrand.MASTERCARD],
      ["378282246310005", CardBrand.AMEX],
      ["6011111111111117", CardBrand.OTHER],
    ];
    for (const [number, brand] of cases) {
      const { payment } = await f.client.authorizePayment(authorizeRequest({ card: card(number) }));
      assert.equal(payment?.cardBrand, brand, number);
      assert.equal(payment?.cardLast4, number.slice(-4));
    }
  });

  test("a retried decline returns the stored decline without calling the processor again", async () => {
    const req = authorizeRequest({ card: card(TEST_CARDS.insufficientFunds) });
    const first = await f.client.authorizePayment(req);
    const calls = f.provider.calls.authorize;
    const retry = await f.client.authorizePayment(req);
    assert.equal(f.provider.calls.authorize, calls, "the card is not touched again");
    assert.equal(retry.payment?.id, first.payment?.id);
    assert.equal(retry.payment?.declineCode, DeclineCode.INSUFFICIENT_FUNDS);
  });
});

describe("AuthorizePayment: idempotency", () => {
  test("same key, same request: same payment, one row, one posting, one event, one processor call", async () => {
    const req = authorizeRequest();
    const calls = f.provider.calls.authorize;
    const first = await f.client.authorizePayment(req);
    const retry = await f.client.authorizePayment(req);
    assert.ok(first.payment);
    assert.deepEqual(retry.payment, first.payment, "the stored response, byte for byte");
    assert.equal(f.provider.calls.authorize, calls + 1);
    assert.equal(await countRows(f.sql, "payments", { column: "order_id", value: req.orderId }), 1);
    assert.equal((await ledgerOf(f.sql, first.payment.id)).length, 1);
    assert.equal((await outboxEvents(f.sql, first.payment.id)).length, 1);
  });

  test("a retry after the payment moved on still returns the first outcome", async () => {
    const req = authorizeRequest();
    const first = await f.client.authorizePayment(req);
    await f.client.capturePayment({ paymentId: first.payment?.id ?? "", idempotencyKey: "cap" });
    const retry = await f.client.authorizePayment(req);
    assert.equal(retry.payment?.status, PaymentStatus.AUTHORIZED);
    assert.equal(retry.payment?.id, first.payment?.id);
  });

  const changes: [string, (r: ReturnType<typeof authorizeRequest>) => object][] = [
    ["a different amount", (r) => ({ ...r, amount: eur(26n) })],
    ["a different order", (r) => ({ ...r, orderId: randomUUID() })],
    ["a different card", (r) => ({ ...r, card: card("5555555555554444") })],
    ["a different expiry", (r) => ({ ...r, card: card(TEST_CARDS.approved, { expMonth: 1 }) })],
  ];
  for (const [what, change] of changes) {
    test(`same key with ${what} is FAILED_PRECONDITION and changes nothing`, async () => {
      const req = authorizeRequest();
      const { payment } = await f.client.authorizePayment(req);
      const calls = f.provider.calls.authorize;
      const err = await rejection(f.client.authorizePayment(change(req)));
      assert.equal(err.code, Code.FailedPrecondition);
      assert.match(err.rawMessage, /idempotency_key/);
      assert.equal(f.provider.calls.authorize, calls);
      const read = await f.client.getPayment({ paymentId: payment?.id ?? "" });
      assert.equal(read.payment?.amount?.units, 25n);
      assert.equal((await ledgerOf(f.sql, payment?.id ?? "")).length, 1);
    });
  }

  test("a different CVC is the same request (the CVC is never part of what is kept)", async () => {
    const req = authorizeRequest();
    const first = await f.client.authorizePayment(req);
    const retry = await f.client.authorizePayment({
      ...req,
      card: card(TEST_CARDS.approved, { cvc: "999" }),
    });
    assert.equal(retry.payment?.id, first.payment?.id);
  });

  test("20 concurrent duplicates with one key make exactly one payment and one charge", async () => {
    const req = authorizeRequest();
    const calls = f.provider.calls.authorize;
    const results = await Promise.all(
      Array.from({ length: 20 }, () => f.client.authorizePayment(req)),
    );
    const ids = new Set(results.map((r) => r.payment?.id));
    assert.equal(ids.size, 1, "every duplicate sees the same payment");
    assert.equal(f.provider.calls.authorize, calls + 1, "the card was authorized once");
    assert.equal(await countRows(f.sql, "payments", { column: "order_id", value: req.orderId }), 1);
    const [id] = ids;
    assert.equal((await ledgerOf(f.sql, id ?? "")).length, 1);
    assert.equal((await outboxEvents(f.sql, id ?? "")).length, 1);
  });

  test("concurrent authorizations of one order under different keys: exactly one succeeds", async () => {
    const orderId = randomUUID();
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, (_, i) =>
        f.client.authorizePayment(
          authorizeRequest({ orderId, idempotencyKey: `k${i}-${orderId}` }),
        ),
      ),
    );
    const ok = results.filter((r) => r.status === "fulfilled");
    assert.equal(ok.length, 1);
    for (const r of results) {
      if (r.status === "rejected") {
        assert.equal((await rejection(Promise.reject(r.reason))).code, Code.FailedPrecondition);
      }
    }
    assert.equal(await countRows(f.sql, "payments", { column: "order_id", value: orderId }), 1);
  });

  test("an order with an authorized or captured payment cannot be authorized under another key", async () => {
    const first = await authorized();
    const again = authorizeRequest({ orderId: first.orderId, idempotencyKey: randomUUID() });
    assert.equal((await rejection(f.client.authorizePayment(again))).code, Code.FailedPrecondition);
    await f.client.capturePayment({ paymentId: first.id, idempotencyKey: randomUUID() });
    assert.equal((await rejection(f.client.authorizePayment(again))).code, Code.FailedPrecondition);
  });

  test("after a void or a decline the order may be authorized again", async () => {
    const declined = await f.client.authorizePayment(
      authorizeRequest({ card: card(TEST_CARDS.declined) }),
    );
    const orderId = declined.payment?.orderId ?? "";
    const second = await authorized({ orderId, idempotencyKey: `${orderId}:second` });
    await f.client.voidPayment({ paymentId: second.id, idempotencyKey: randomUUID() });
    const third = await authorized({ orderId, idempotencyKey: `${orderId}:third` });
    assert.notEqual(third.id, second.id);
  });

  test("one key string may be used once per RPC: keys are scoped to the RPC", async () => {
    const key = randomUUID();
    const p = await authorized({ idempotencyKey: key });
    const { payment } = await f.client.capturePayment({ paymentId: p.id, idempotencyKey: key });
    assert.equal(payment?.status, PaymentStatus.CAPTURED);
  });

  test("an unreachable processor is UNAVAILABLE, records nothing, and the same key retries", async () => {
    const req = authorizeRequest();
    f.provider.down = true;
    let err: Awaited<ReturnType<typeof rejection>>;
    try {
      err = await rejection(f.client.authorizePayment(req));
    } finally {
      f.provider.down = false;
    }
    assert.equal(err.code, Code.Unavailable);
    assert.equal(await countRows(f.sql, "payments", { column: "order_id", value: req.orderId }), 0);
    assert.equal(
      await countRows(f.sql, "idempotency_keys", { column: "key", value: req.idempotencyKey }),
      0,
    );
    const { payment } = await f.client.authorizePayment(req);
    assert.equal(payment?.status, PaymentStatus.AUTHORIZED);
  });
});

describe("AuthorizePayment: validation", () => {
  test("without a card or an amount is INVALID_ARGUMENT naming the field", async () => {
    const { card: _card, ...noCard } = authorizeRequest();
    assert.deepEqual(violationsOf(await rejection(f.client.authorizePayment(noCard))), [
      { path: "card", rule: "required" },
    ]);
    const { amount: _amount, ...noAmount } = authorizeRequest();
    assert.deepEqual(violationsOf(await rejection(f.client.authorizePayment(noAmount))), [
      { path: "amount", rule: "required" },
    ]);
  });

  test("a zero amount, a bad order id or a malformed card number is INVALID_ARGUMENT", async () => {
    const cases: [object, string, string][] = [
      [{ amount: eur(0n) }, "amount", "amount.positive"],
      [{ orderId: "not-a-uuid", idempotencyKey: "k" }, "order_id", "string.uuid"],
      [{ card: card("4242 4242 4242 4242") }, "card.number", "string.pattern"],
      [{ idempotencyKey: "" }, "idempotency_key", "string.min_len"],
    ];
    for (const [overrides, path, rule] of cases) {
      const err = await rejection(f.client.authorizePayment(authorizeRequest(overrides)));
      assert.deepEqual(violationsOf(err), [{ path, rule }], path);
    }
  });

  test("an amount finer than the currency's minor unit is INVALID_ARGUMENT naming amount.nanos", async () => {
    for (const amount of [
      eur(1n, 5_000_000 + 1),
      { currencyCode: "JPY", units: 100n, nanos: 500_000_000 },
    ]) {
      const req = authorizeRequest({ amount });
      const err = await rejection(f.client.authorizePayment(req));
      assert.deepEqual(violationsOf(err), [{ path: "amount.nanos", rule: "amount.minor_units" }]);
      assert.equal(
        await countRows(f.sql, "payments", { column: "order_id", value: req.orderId }),
        0,
      );
    }
  });

  test("minor units follow the currency: 1500 JPY and 1.234 KWD", async () => {
    const jpy = await authorized({ amount: { currencyCode: "JPY", units: 1500n, nanos: 0 } });
    assert.deepEqual((await ledgerOf(f.sql, jpy.id))[0]?.entries[0], "Dr customer_hold 1500");
    const kwd = await authorized({
      amount: { currencyCode: "KWD", units: 1n, nanos: 234_000_000 },
    });
    assert.deepEqual((await ledgerOf(f.sql, kwd.id))[0]?.entries[0], "Dr customer_hold 1234");
    assert.deepEqual([kwd.amount?.units, kwd.amount?.nanos], [1n, 234_000_000]);
  });
});

describe("CapturePayment", () => {
  test("captures the whole authorized amount: hold consumed, revenue credited, PaymentCaptured", async () => {
    const p = await authorized();
    const { payment } = await f.client.capturePayment({
      paymentId: p.id,
      idempotencyKey: `c1${p.id}`,
    });
    assert.equal(payment?.status, PaymentStatus.CAPTURED);
    assert.equal(payment?.capturedAmount?.units, 25n);
    assert.deepEqual(await ledgerOf(f.sql, p.id), [
      { kind: "authorize", memo: "", entries: ["Dr customer_hold 2500", "Cr psp_pending 2500"] },
      {
        kind: "capture",
        memo: "",
        entries: [
          "Dr psp_pending 2500",
          "Cr customer_hold 2500",
          "Dr psp_receivable 2500",
          "Cr revenue 2500",
        ],
      },
    ]);
    assert.deepEqual(
      (await outboxEvents(f.sql, p.id)).map((e) => e.type),
      ["PaymentAuthorized", "PaymentCaptured"],
    );
  });

  test("a retry, and a capture under another key, return it unchanged with no second charge", async () => {
    const p = await authorized();
    const first = await f.client.capturePayment({ paymentId: p.id, idempotencyKey: `a${p.id}` });
    const calls = f.provider.calls.capture;
    const retry = await f.client.capturePayment({ paymentId: p.id, idempotencyKey: `a${p.id}` });
    const other = await f.client.capturePayment({ paymentId: p.id, idempotencyKey: `b${p.id}` });
    assert.deepEqual(retry.payment, first.payment);
    assert.equal(other.payment?.status, PaymentStatus.CAPTURED);
    assert.equal(other.payment?.capturedAmount?.units, 25n);
    assert.equal(f.provider.calls.capture, calls);
    assert.equal((await ledgerOf(f.sql, p.id)).length, 2);
    assert.equal((await outboxEvents(f.sql, p.id)).length, 2);
  });

  test("concurrent captures under different keys charge once", async () => {
    const p = await authorized();
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        f.client.capturePayment({ paymentId: p.id, idempotencyKey: `cc${i}${p.id}` }),
      ),
    );
    assert.ok(results.every((r) => r.payment?.status === PaymentStatus.CAPTURED));
    assert.deepEqual(
      (await ledgerOf(f.sql, p.id)).map((t) => t.kind),
      ["authorize", "capture"],
    );
  });

  test("an unknown payment is NOT_FOUND; a voided or declined one FAILED_PRECONDITION", async () => {
    const unknown = await rejection(
      f.client.capturePayment({ paymentId: randomUUID(), idempotencyKey: randomUUID() }),
    );
    assert.equal(unknown.code, Code.NotFound);
    const voided = await authorized();
    await f.client.voidPayment({ paymentId: voided.id, idempotencyKey: randomUUID() });
    const declined = (
      await f.client.authorizePayment(authorizeRequest({ card: card(TEST_CARDS.declined) }))
    ).payment;
    for (const p of [voided, declined]) {
      const err = await rejection(
        f.client.capturePayment({ paymentId: p?.id ?? "", idempotencyKey: randomUUID() }),
      );
      assert.equal(err.code, Code.FailedPrecondition);
    }
    assert.deepEqual(
      (await ledgerOf(f.sql, voided.id)).map((t) => t.kind),
      ["authorize", "void"],
    );
  });

  test("4000000000000341 authorizes, but its capture is declined: CAPTURE_DECLINED, nothing charged, still voidable", async () => {
    const p = await authorized({ card: card(TEST_CARDS.captureDeclined) });
    const key = `${p.orderId}:capture`;
    for (let attempt = 0; attempt < 2; attempt++) {
      // A retry is declined again: a declined capture never becomes a charge.
      const err = await rejection(
        f.client.capturePayment({ paymentId: p.id, idempotencyKey: key }),
      );
      assert.equal(err.code, Code.FailedPrecondition);
      assert.deepEqual(
        errorInfosOf(err).map((i) => [i.domain, i.reason, i.metadata]),
        [
          [
            "payments.meshmart",
            "CAPTURE_DECLINED",
            { payment_id: p.id, decline_code: "card_declined" },
          ],
        ],
      );
    }
    const { payment: still } = await f.client.getPayment({ paymentId: p.id });
    assert.equal(still?.status, PaymentStatus.AUTHORIZED);
    assert.equal(still?.capturedAmount?.units ?? 0n, 0n);
    assert.deepEqual(
      (await ledgerOf(f.sql, p.id)).map((t) => t.kind),
      ["authorize"],
    );
    // The hold is released the usual way, and the payment nets zero in a balanced ledger.
    const { payment: voided } = await f.client.voidPayment({
      paymentId: p.id,
      idempotencyKey: `${p.orderId}:void`,
      reason: "capture declined",
    });
    assert.equal(voided?.status, PaymentStatus.VOIDED);
    assert.deepEqual(
      (await ledgerOf(f.sql, p.id)).map((t) => t.kind),
      ["authorize", "void"],
    );
    assert.deepEqual(
      (await f.store.netCapturedByOrder([p.orderId])).map((n) => n.net_minor),
      [0n],
    );
    assert.deepEqual(await f.store.ledgerImbalances(), []);
    assert.deepEqual(
      (await outboxEvents(f.sql, p.id)).map((e) => e.type),
      ["PaymentAuthorized", "PaymentVoided"],
    );
    // Once voided it is refused like any voided payment, with no reason of the processor.
    const late = await rejection(
      f.client.capturePayment({ paymentId: p.id, idempotencyKey: randomUUID() }),
    );
    assert.equal(late.code, Code.FailedPrecondition);
    assert.deepEqual(errorInfosOf(late), []);
  });

  test("the same key for another payment is FAILED_PRECONDITION", async () => {
    const [a, b] = [await authorized(), await authorized()];
    const key = randomUUID();
    await f.client.capturePayment({ paymentId: a.id, idempotencyKey: key });
    const err = await rejection(f.client.capturePayment({ paymentId: b.id, idempotencyKey: key }));
    assert.equal(err.code, Code.FailedPrecondition);
    assert.equal(
      (await f.client.getPayment({ paymentId: b.id })).payment?.status,
      PaymentStatus.AUTHORIZED,
    );
  });
});

describe("VoidPayment", () => {
  test("releases the hold, keeps the reason in the ledger, publishes PaymentVoided", async () => {
    const p = await authorized();
    const { payment } = await f.client.voidPayment({
      paymentId: p.id,
      idempotencyKey: `${p.orderId}:void`,
      reason: "out of stock",
    });
    assert.equal(payment?.status, PaymentStatus.VOIDED);
    assert.equal(payment?.capturedAmount?.units, 0n);
    assert.deepEqual((await ledgerOf(f.sql, p.id))[1], {
      kind: "void",
      memo: "out of stock",
      entries: ["Dr psp_pending 2500", "Cr customer_hold 2500"],
    });
    const [, voided] = await outboxEvents(f.sql, p.id);
    assert.equal(voided?.type, "PaymentVoided");
    assert.equal((voided?.message.amount as { units: bigint } | undefined)?.units, 25n);
  });

  test("voiding a voided payment returns it unchanged", async () => {
    const p = await authorized();
    await f.client.voidPayment({ paymentId: p.id, idempotencyKey: `v1${p.id}` });
    const again = await f.client.voidPayment({ paymentId: p.id, idempotencyKey: `v2${p.id}` });
    assert.equal(again.payment?.status, PaymentStatus.VOIDED);
    assert.equal((await ledgerOf(f.sql, p.id)).length, 2);
  });

  test("a captured payment cannot be voided (refund it); a declined one neither; unknown is NOT_FOUND", async () => {
    const c = await captured();
    const err = await rejection(
      f.client.voidPayment({ paymentId: c.id, idempotencyKey: randomUUID() }),
    );
    assert.equal(err.code, Code.FailedPrecondition);
    assert.match(err.rawMessage, /refund/);
    const declined = (
      await f.client.authorizePayment(authorizeRequest({ card: card(TEST_CARDS.declined) }))
    ).payment;
    assert.equal(
      (
        await rejection(
          f.client.voidPayment({ paymentId: declined?.id ?? "", idempotencyKey: randomUUID() }),
        )
      ).code,
      Code.FailedPrecondition,
    );
    assert.equal(
      (
        await rejection(
          f.client.voidPayment({ paymentId: randomUUID(), idempotencyKey: randomUUID() }),
        )
      ).code,
      Code.NotFound,
    );
  });

  test("a void racing a capture: exactly one wins, and the ledger agrees with the status", async () => {
    for (let i = 0; i < 5; i++) {
      const p = await authorized();
      const [cap, vd] = await Promise.allSettled([
        f.client.capturePayment({ paymentId: p.id, idempotencyKey: randomUUID() }),
        f.client.voidPayment({ paymentId: p.id, idempotencyKey: randomUUID() }),
      ]);
      assert.equal(
        [cap, vd].filter((r) => r.status === "fulfilled").length,
        1,
        "one of capture and void fails with FAILED_PRECONDITION",
      );
      const status = (await f.client.getPayment({ paymentId: p.id })).payment?.status;
      const kinds = (await ledgerOf(f.sql, p.id)).map((t) => t.kind);
      assert.deepEqual(kinds, [
        "authorize",
        status === PaymentStatus.CAPTURED ? "capture" : "void",
      ]);
    }
  });
});

describe("RefundPayment", () => {
  test("partial refunds, then the rest: PARTIALLY_REFUNDED, REFUNDED, refunds listed oldest first", async () => {
    const c = await captured();
    const first = await f.client.refundPayment({
      paymentId: c.id,
      idempotencyKey: `r1${c.id}`,
      amount: eur(10n),
      reason: "one item broken",
    });
    assert.equal(first.payment?.status, PaymentStatus.PARTIALLY_REFUNDED);
    assert.equal(first.payment?.refundedAmount?.units, 10n);
    assert.equal(first.refund?.amount?.units, 10n);
    assert.equal(first.refund?.reason, "one item broken");
    const rest = await f.client.refundPayment({ paymentId: c.id, idempotencyKey: `r2${c.id}` });
    assert.equal(rest.payment?.status, PaymentStatus.REFUNDED);
    assert.equal(rest.refund?.amount?.units, 15n, "unset amount refunds what is left");
    assert.deepEqual(
      rest.payment?.refunds.map((r) => [r.id, r.amount?.units]),
      [
        [first.refund?.id, 10n],
        [rest.refund?.id, 15n],
      ],
    );
    const ledger = await ledgerOf(f.sql, c.id);
    assert.deepEqual(ledger.slice(2), [
      {
        kind: "refund",
        memo: "one item broken",
        entries: ["Dr revenue 1000", "Cr psp_receivable 1000"],
      },
      { kind: "refund", memo: "", entries: ["Dr revenue 1500", "Cr psp_receivable 1500"] },
    ]);
    const refunded = (await outboxEvents(f.sql, c.id)).filter((e) => e.type === "PaymentRefunded");
    assert.deepEqual(
      refunded.map((e) => e.message.refundId),
      [first.refund?.id, rest.refund?.id],
    );
  });

  test("a retried refund returns the same refund and refunds once", async () => {
    const c = await captured();
    const req = { paymentId: c.id, idempotencyKey: `r${c.id}`, amount: eur(5n) };
    const first = await f.client.refundPayment(req);
    const retry = await f.client.refundPayment(req);
    assert.equal(retry.refund?.id, first.refund?.id);
    assert.equal(await countRows(f.sql, "refunds", { column: "payment_id", value: c.id }), 1);
    const diff = await rejection(f.client.refundPayment({ ...req, amount: eur(6n) }));
    assert.equal(diff.code, Code.FailedPrecondition);
  });

  test("more than is left is FAILED_PRECONDITION; so is refunding an uncaptured or fully refunded payment", async () => {
    const c = await captured();
    const tooMuch = await rejection(
      f.client.refundPayment({
        paymentId: c.id,
        idempotencyKey: randomUUID(),
        amount: eur(25n, 10_000_000),
      }),
    );
    assert.equal(tooMuch.code, Code.FailedPrecondition);
    assert.match(tooMuch.rawMessage, /25\.01 EUR exceeds the 25\.00 EUR left/);
    await f.client.refundPayment({ paymentId: c.id, idempotencyKey: randomUUID() });
    const full = await rejection(
      f.client.refundPayment({ paymentId: c.id, idempotencyKey: randomUUID() }),
    );
    assert.equal(full.code, Code.FailedPrecondition);
    const a = await authorized();
    const uncaptured = await rejection(
      f.client.refundPayment({ paymentId: a.id, idempotencyKey: randomUUID() }),
    );
    assert.equal(uncaptured.code, Code.FailedPrecondition);
    assert.equal(
      (
        await rejection(
          f.client.refundPayment({ paymentId: randomUUID(), idempotencyKey: randomUUID() }),
        )
      ).code,
      Code.NotFound,
    );
  });

  test("another currency is INVALID_ARGUMENT naming amount.currency_code", async () => {
    const c = await captured();
    const err = await rejection(
      f.client.refundPayment({
        paymentId: c.id,
        idempotencyKey: randomUUID(),
        amount: { currencyCode: "USD", units: 1n, nanos: 0 },
      }),
    );
    assert.deepEqual(violationsOf(err), [
      { path: "amount.currency_code", rule: "amount.currency_matches" },
    ]);
  });

  test("concurrent refunds never refund more than was captured", async () => {
    const c = await captured();
    const results = await Promise.allSettled(
      Array.from({ length: 6 }, () =>
        f.client.refundPayment({ paymentId: c.id, idempotencyKey: randomUUID(), amount: eur(10n) }),
      ),
    );
    assert.equal(results.filter((r) => r.status === "fulfilled").length, 2);
    const read = await f.client.getPayment({ paymentId: c.id });
    assert.equal(read.payment?.refundedAmount?.units, 20n);
    assert.equal(read.payment?.status, PaymentStatus.PARTIALLY_REFUNDED);
  });
});

describe("GetPayment", () => {
  test("returns the payment; an unknown id is NOT_FOUND, a malformed one INVALID_ARGUMENT", async () => {
    const p = await authorized();
    const { payment } = await f.client.getPayment({ paymentId: p.id });
    assert.deepEqual(payment, p);
    assert.equal(
      (await rejection(f.client.getPayment({ paymentId: randomUUID() }))).code,
      Code.NotFound,
    );
    assert.deepEqual(violationsOf(await rejection(f.client.getPayment({ paymentId: "x" }))), [
      { path: "payment_id", rule: "string.uuid" },
    ]);
  });
});

describe("ledger", () => {
  test("after a mixed sequence every transaction balances and net captured per order is right", async () => {
    const confirmed = await captured({ amount: eur(40n) });
    const voided = await authorized({ amount: eur(30n) });
    await f.client.voidPayment({ paymentId: voided.id, idempotencyKey: randomUUID() });
    const refunded = await captured({ amount: eur(20n) });
    await f.client.refundPayment({ paymentId: refunded.id, idempotencyKey: randomUUID() });
    const partial = await captured({ amount: eur(50n) });
    await f.client.refundPayment({
      paymentId: partial.id,
      idempotencyKey: randomUUID(),
      amount: eur(12n, 340_000_000),
    });
    const declined = (
      await f.client.authorizePayment(authorizeRequest({ card: card(TEST_CARDS.declined) }))
    ).payment;
    const open = await authorized({ amount: eur(7n) });

    assert.deepEqual(await f.store.ledgerImbalances(), []);
    const [totals] = await f.sql<{ debits: bigint; credits: bigint }[]>`
      select sum(debit_minor)::bigint as debits, sum(credit_minor)::bigint as credits from ledger_entries`;
    assert.equal(totals?.debits, totals?.credits);

    const orders = [confirmed, voided, refunded, partial, declined, open].map(
      (p) => p?.orderId ?? "",
    );
    const net = new Map(
      (await f.store.netCapturedByOrder(orders)).map((n) => [n.order_id, n.net_minor]),
    );
    assert.deepEqual(
      orders.map((o) => net.get(o)),
      [4000n, 0n, 0n, 5000n - 1234n, 0n, 0n],
    );

    // Per payment, the open hold is customer_hold's balance: only the uncaptured authorization has one.
    const hold = async (paymentId: string) => {
      const rows = await f.store.accountBalances(paymentId);
      const h = rows.find((r) => r.account === "customer_hold");
      return (h?.debit_minor ?? 0n) - (h?.credit_minor ?? 0n);
    };
    assert.equal(await hold(open.id), 700n);
    assert.equal(await hold(confirmed.id), 0n);
    assert.equal(await hold(voided.id), 0n);
  });

  test("a write refused after the answer was built fails the call and stores nothing; the key stays free", async () => {
    const orderId = randomUUID();
    const key = randomUUID();
    const claim = { operation: "authorize" as const, key, requestHash: "h" };
    const attempt = (entries: LedgerEntry[]) =>
      f.store.idempotent(
        claim,
        async () => undefined,
        async (tx) => {
          const row = tx.insertPayment({
            id: randomUUID(),
            order_id: orderId,
            status: "authorized",
            currency: "EUR",
            amount_minor: 100n,
            card_last4: "4242",
            card_brand: "visa",
            decline_code: null,
            failure_reason: "",
            psp_reference: "psp_1",
          });
          // Sent with the response's statement and the COMMIT, not waited for on its own.
          tx.post(row.id, { kind: "authorize", currency: "EUR", memo: "", entries });
          return { response: new Uint8Array([1]), paymentId: row.id };
        },
      );
    await assert.rejects(
      attempt([{ account: "customer_hold", debitMinor: 100n, creditMinor: 0n }]),
      /unbalanced/,
    );
    const [left] = await f.sql<{ payments: number; keys: number }[]>`
      select (select count(*)::int from payments where order_id = ${orderId}) as payments,
             (select count(*)::int from idempotency_keys where key = ${key}) as keys`;
    assert.deepEqual({ ...left }, { payments: 0, keys: 0 });
    const balanced = await attempt([
      { account: "customer_hold", debitMinor: 100n, creditMinor: 0n },
      { account: "psp_pending", debitMinor: 0n, creditMinor: 100n },
    ]);
    assert.equal(balanced.kind, "done");
  });

  test("the database refuses an unbalanced posting and any change to posted entries", async () => {
    const p = await authorized();
    /** A capture ledger transaction of `p`, its entries written by `entries`, one statement each. */
    const posting = (entries: ((tx: TransactionSql, id: string) => Promise<unknown>)[]) =>
      f.sql.begin(async (tx) => {
        const [t] = await tx<{ id: string }[]>`
          insert into ledger_transactions (id, payment_id, kind, currency)
          values (gen_random_uuid(), ${p.id}, 'capture', 'EUR') returning id`;
        for (const write of entries) await write(tx, t?.id ?? "");
      });
    const debit = (tx: TransactionSql, id: string) => tx`
      insert into ledger_entries (transaction_id, payment_id, account, currency, debit_minor)
      values (${id}, ${p.id}, 'psp_receivable', 'EUR', 100)`;
    const credit = (tx: TransactionSql, id: string) => tx`
      insert into ledger_entries (transaction_id, payment_id, account, currency, credit_minor)
      values (${id}, ${p.id}, 'revenue', 'EUR', 100)`;
    await assert.rejects(posting([debit]), /unbalanced/);
    // Balanced only by a second statement is refused too: each statement must leave the
    // ledger transactions it wrote balanced.
    await assert.rejects(posting([debit, credit]), /unbalanced/);
    const ledgerBefore = await f.sql`select count(*)::int as n from ledger_entries`;
    // In one statement, balanced: accepted.
    await posting([
      (tx, id) => tx`
        insert into ledger_entries (transaction_id, payment_id, account, currency, debit_minor, credit_minor)
        values (${id}, ${p.id}, 'psp_receivable', 'EUR', 100, 0),
               (${id}, ${p.id}, 'revenue', 'EUR', 0, 100)`,
    ]);
    const ledgerAfter = await f.sql`select count(*)::int as n from ledger_entries`;
    assert.equal(ledgerAfter[0]?.n, (ledgerBefore[0]?.n ?? 0) + 2);
    await assert.rejects(
      f.sql`update ledger_entries set debit_minor = debit_minor + 1 where payment_id = ${p.id}`,
      /append-only/,
    );
    await assert.rejects(
      f.sql`delete from ledger_entries where payment_id = ${p.id}`,
      /append-only/,
    );
  });
});

describe("card data", () => {
  test("the card number never reaches a log line or a database column", async () => {
    const numbers = [
      TEST_CARDS.approved,
      TEST_CARDS.declined,
      TEST_CARDS.insufficientFunds,
      "5105105105105100",
    ];
    for (const number of numbers) {
      const { payment } = await f.client.authorizePayment(
        authorizeRequest({ card: card(number, { cvc: "987" }) }),
      );
      if (payment?.status === PaymentStatus.AUTHORIZED) {
        await f.client.capturePayment({ paymentId: payment.id, idempotencyKey: randomUUID() });
        await f.client.refundPayment({ paymentId: payment.id, idempotencyKey: randomUUID() });
      }
    }
    // Failures too: a key reuse, a malformed number, an unreachable processor.
    const req = authorizeRequest({ card: card("5105105105105100") });
    await f.client.authorizePayment(req);
    await rejection(f.client.authorizePayment({ ...req, amount: eur(99n) }));
    await rejection(
      f.client.authorizePayment(authorizeRequest({ card: card("41111111111111112222") })),
    );
    f.provider.down = true;
    try {
      await rejection(
        f.client.authorizePayment(authorizeRequest({ card: card("5105105105105100") })),
      );
    } finally {
      f.provider.down = false;
    }

    const logText = f.logs.text() + f.rpcLogs.text();
    assert.ok(logText.includes("payment authorized"), "the service did log");
    for (const number of [...numbers, "41111111111111112222"]) {
      assert.ok(!logText.includes(number), `card number ${number.slice(-4)} in a log line`);
      assert.deepEqual(await columnsContaining(f.sql, number), [], "no column holds the number");
    }
    assert.ok(!logText.includes('"cvc"'), "no CVC field in logs");
    // The scan works: the last four digits are found where they belong.
    assert.ok((await columnsContaining(f.sql, "5100")).includes("payments.card_last4"));
  });
});
