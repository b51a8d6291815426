import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { summarizeCard } from "../src/card.js";
import { createFakePaymentProvider, TEST_CARDS } from "../src/fake-payment-provider.js";
import {
  assertBalanced,
  authorizePosting,
  capturePosting,
  type Posting,
  refundPosting,
  voidPosting,
} from "../src/ledger.js";
import { fromMinorUnits, minorDigits, toMinorUnits } from "../src/money.js";
import { ProviderUnavailableError } from "../src/payment-provider.js";
import { peerServiceAccount } from "../src/peer.js";
import { card } from "./support/payments-fixture.js";

// The pure pieces: money conversion, card summary, the fake PSP's rules, ledger postings,
// and reading the mesh peer from x-forwarded-client-cert.

describe("money", () => {
  test("Money to minor units and back, per the currency's minor unit", () => {
    const cases: [string, bigint, number, bigint][] = [
      ["EUR", 12n, 500_000_000, 1250n],
      ["EUR", 0n, 10_000_000, 1n],
      ["JPY", 1500n, 0, 1500n],
      ["KWD", 1n, 234_000_000, 1234n],
      ["CLF", 2n, 100_000, 20001n],
    ];
    for (const [currencyCode, units, nanos, minor] of cases) {
      assert.equal(toMinorUnits({ currencyCode, units, nanos }), minor, currencyCode);
      const back = fromMinorUnits(minor, currencyCode);
      assert.deepEqual([back.currencyCode, back.units, back.nanos], [currencyCode, units, nanos]);
    }
    assert.equal(minorDigits("HUF"), 2, "ISO 4217, not CLDR display digits");
  });

  test("amounts finer than the minor unit are refused, not rounded", () => {
    assert.equal(toMinorUnits({ currencyCode: "EUR", units: 1n, nanos: 5_000_001 }), undefined);
    assert.equal(toMinorUnits({ currencyCode: "JPY", units: 1n, nanos: 500_000_000 }), undefined);
  });

  test("int64 amounts never pass through a double", () => {
    const units = 92_233_720_368_547n; // ~2^63 / 100
    assert.equal(
      toMinorUnits({ currencyCode: "EUR", units, nanos: 70_000_000 }),
      units * 100n + 7n,
    );
  });
});

describe("card summary", () => {
  test("last four digits and brand by prefix", () => {
    assert.deepEqual(summarizeCard("4242424242424242"), { last4: "4242", brand: "visa" });
    assert.deepEqual(summarizeCard("5105105105105100"), { last4: "5100", brand: "mastercard" });
    assert.deepEqual(summarizeCard("2720990000000007"), { last4: "0007", brand: "mastercard" });
    assert.deepEqual(summarizeCard("2721000000000004"), { last4: "0004", brand: "other" });
    assert.deepEqual(summarizeCard("340000000000009"), { last4: "0009", brand: "amex" });
    assert.deepEqual(summarizeCard("6011000990139424"), { last4: "9424", brand: "other" });
  });
});

describe("fake PSP", () => {
  const psp = createFakePaymentProvider({ now: () => new Date("2030-06-15T00:00:00Z") });
  const authorize = (number: string, expYear = 2031, expMonth = 1) =>
    psp.authorize({
      idempotencyKey: "k",
      orderId: "o",
      amountMinor: 100n,
      currency: "EUR",
      card: card(number, { expYear, expMonth }),
    });

  test("decides by test card", async () => {
    const approved = await authorize(TEST_CARDS.approved);
    assert.ok(approved.approved && approved.reference.startsWith("fake_auth_"));
    assert.deepEqual(await authorize(TEST_CARDS.declined), {
      approved: false,
      decline: "card_declined",
      message: "card declined",
    });
    assert.deepEqual(await authorize(TEST_CARDS.insufficientFunds), {
      approved: false,
      decline: "insufficient_funds",
      message: "insufficient funds",
    });
    assert.equal((await authorize("5555555555554444")).approved, false);
  });

  test("a card is valid through its expiry month", async () => {
    assert.equal((await authorize(TEST_CARDS.approved, 2030, 6)).approved, true);
    assert.deepEqual(await authorize(TEST_CARDS.approved, 2030, 5), {
      approved: false,
      decline: "expired_card",
      message: "expired card",
    });
  });

  test("a call cancelled while the processor is slow is 'unavailable'", async () => {
    const slow = createFakePaymentProvider({ latencyMs: 5_000 });
    const controller = new AbortController();
    const pending = slow.authorize({
      idempotencyKey: "k",
      orderId: "o",
      amountMinor: 1n,
      currency: "EUR",
      card: card(),
      signal: controller.signal,
    });
    controller.abort();
    await assert.rejects(pending, ProviderUnavailableError);
  });
});

describe("ledger postings", () => {
  const sum = (p: Posting, side: "debitMinor" | "creditMinor") =>
    p.entries.reduce((n, e) => n + e[side], 0n);

  test("every posting balances", () => {
    for (const p of [
      authorizePosting(999n, "EUR"),
      capturePosting(999n, "EUR"),
      voidPosting(999n, "EUR", "why"),
      refundPosting(500n, "EUR", "why", "r"),
    ]) {
      assert.equal(sum(p, "debitMinor"), sum(p, "creditMinor"), p.kind);
      assert.doesNotThrow(() => assertBalanced(p));
    }
  });

  test("an unbalanced or malformed posting is refused", () => {
    const bad: Posting = {
      kind: "capture",
      currency: "EUR",
      memo: "",
      entries: [{ account: "revenue", debitMinor: 0n, creditMinor: 5n }],
    };
    assert.throws(() => assertBalanced(bad), /unbalanced/);
    assert.throws(
      () =>
        assertBalanced({
          ...bad,
          entries: [{ account: "revenue", debitMinor: 5n, creditMinor: 5n }],
        }),
      /malformed/,
    );
  });
});

describe("peer service account from x-forwarded-client-cert", () => {
  test("the last element's SPIFFE URI names the caller", () => {
    assert.equal(
      peerServiceAccount(
        'By=spiffe://cluster.local/ns/meshmart/sa/payments;Hash=0a1b;Subject="CN=x, O=y";URI=spiffe://cluster.local/ns/meshmart/sa/orders',
      ),
      "orders",
    );
    assert.equal(
      peerServiceAccount(
        "URI=spiffe://td/ns/a/sa/orders,By=spiffe://td/ns/a/sa/payments;URI=spiffe://td/ns/a/sa/web",
      ),
      "web",
      "an element the caller sent before the sidecar's is ignored",
    );
  });

  test("missing, malformed or non-SPIFFE values name nobody", () => {
    for (const header of [
      null,
      "",
      "By=x;Hash=y",
      "URI=https://example.com/sa/orders",
      'URI="spiffe://td/ns/a/sa/"',
    ]) {
      assert.equal(peerServiceAccount(header), undefined, String(header));
    }
  });
});
