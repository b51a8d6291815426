import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ConfigError, createPageTokens, loadConfig } from "@meshmart/kit";
import { ProductSchema } from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_pb.js";
import { CardSchema } from "@meshmart/kit/gen/meshmart/common/v1/card_pb.js";
import { ListOrdersRequestSchema } from "@meshmart/kit/gen/meshmart/orders/v1/orders_service_pb.js";
import { createCardVault } from "../src/card-vault.js";
import { ordersConfigSchema } from "../src/config.js";
import { decodePageToken, encodePageToken } from "../src/order-mapper.js";
import { itemsHash, priceOrder } from "../src/pricing.js";
import { planCancel, retryDelayMs } from "../src/saga.js";
import type { SagaRow } from "../src/store.js";

const product = (units: bigint, nanos: number, currencyCode = "EUR") =>
  create(ProductSchema, {
    id: randomUUID(),
    sku: "SKU-1",
    name: "thing",
    price: { currencyCode, units, nanos },
  });

test("prices are multiplied and summed exactly, in units and nanos", () => {
  const a = product(0n, 100_000_000); // 0.10
  const b = product(19n, 990_000_000); // 19.99
  const priced = priceOrder(
    [
      { productId: a.id, quantity: 3 },
      { productId: b.id, quantity: 1000 },
    ],
    [a, b],
  );
  assert.equal(priced.currency, "EUR");
  assert.deepEqual(priced.lines[0]?.line, { units: 0n, nanos: 300_000_000 });
  assert.deepEqual(priced.lines[1]?.line, { units: 19_990n, nanos: 0 });
  // 0.30 + 19990.00; a double would make 0.1 * 3 = 0.30000000000000004.
  assert.deepEqual(priced.total, { units: 19_990n, nanos: 300_000_000 });
});

test("an order's products must share a currency", () => {
  const a = product(1n, 0, "EUR");
  const b = product(1n, 0, "USD");
  assert.throws(
    () =>
      priceOrder(
        [
          { productId: a.id, quantity: 1 },
          { productId: b.id, quantity: 1 },
        ],
        [a, b],
      ),
    (e: unknown) => e instanceof ConnectError && e.code === Code.FailedPrecondition,
  );
});

test("the items hash ignores order but not quantities", () => {
  const [x, y] = [randomUUID(), randomUUID()];
  const one = itemsHash([
    { productId: x, quantity: 1 },
    { productId: y, quantity: 2 },
  ]);
  const reordered = itemsHash([
    { productId: y, quantity: 2 },
    { productId: x, quantity: 1 },
  ]);
  const more = itemsHash([
    { productId: x, quantity: 1 },
    { productId: y, quantity: 3 },
  ]);
  assert.equal(one, reordered);
  assert.notEqual(one, more);
});

test("a sealed card opens only with its key and for its order", () => {
  const key = randomBytes(32);
  const vault = createCardVault(key);
  const card = create(CardSchema, {
    number: "4242424242424242",
    expMonth: 12,
    expYear: 2040,
    cvc: "123",
  });
  const orderId = randomUUID();
  const sealed = vault.seal(card, orderId);
  assert.ok(!sealed.toString("latin1").includes("4242424242424242"));
  assert.equal(vault.open(sealed, orderId).number, "4242424242424242");
  assert.throws(() => vault.open(sealed, randomUUID()), "another order's saga");
  assert.throws(() => createCardVault(randomBytes(32)).open(sealed, orderId), "another key");
  const tampered = Buffer.from(sealed);
  tampered[tampered.length - 1] = (tampered.at(-1) ?? 0) ^ 1;
  assert.throws(() => vault.open(tampered, orderId), "altered bytes");
});

test("page tokens round-trip, are bound to the listing, and cannot be forged", () => {
  const tokens = createPageTokens(randomBytes(32), ListOrdersRequestSchema.field.pageToken);
  const token = encodePageToken(tokens, 42n, "user-1");
  assert.equal(decodePageToken(tokens, token, "user-1"), 42n);
  for (const [bad, scope] of [
    [token, "user-2"],
    [token, "*"],
    ["not base64 json", "user-1"],
    [Buffer.from('{"s":"1","o":"user-1"}').toString("base64url"), "user-1"],
    [
      encodePageToken(
        createPageTokens(randomBytes(32), ListOrdersRequestSchema.field.pageToken),
        1n,
        "user-1",
      ),
      "user-1",
    ],
  ] as const) {
    assert.throws(
      () => decodePageToken(tokens, bad, scope),
      (e: unknown) => e instanceof ConnectError && e.code === Code.InvalidArgument,
    );
  }
});

test("cancellation is possible until CommitReservation may have been sent", () => {
  const saga = (step: SagaRow["step"], commitSent = false) =>
    ({ step, commit_sent: commitSent }) as SagaRow;
  assert.equal(planCancel(saga("RESERVE"), false), "compensate");
  assert.equal(planCancel(saga("RESERVE"), true), "flag");
  assert.equal(planCancel(saga("AUTHORIZE"), true), "flag");
  assert.equal(planCancel(saga("COMMIT_STOCK"), false), "compensate");
  assert.equal(planCancel(saga("COMMIT_STOCK", true), false), "too_late");
  assert.equal(planCancel(saga("CAPTURE", true), false), "too_late");
  assert.equal(planCancel(saga("RELEASE"), true), "cancelling");
  assert.equal(planCancel(saga("VOID"), false), "cancelling");
});

test("retry delays grow exponentially up to the cap, jittered within half of it", () => {
  for (let i = 0; i < 200; i++) {
    const first = retryDelayMs(1, 100, 5_000);
    assert.ok(first >= 50 && first <= 100, `first ${first}`);
    const fourth = retryDelayMs(4, 100, 5_000);
    assert.ok(fourth >= 400 && fourth <= 800, `fourth ${fourth}`);
    const late = retryDelayMs(40, 100, 5_000);
    assert.ok(late >= 2_500 && late <= 5_000, `late ${late}`);
  }
});

test("config: the card key is required and the lease must outlast a step", () => {
  const env = {
    SERVICE_NAME: "orders",
    GRPC_PORT: "0",
    HTTP_PORT: "0",
    ADMIN_PORT: "0",
    DATABASE_URL: "postgres://localhost/orders",
    REDIS_URL: "redis://localhost:6379",
    NATS_URL: "nats://localhost:4222",
    CATALOG_URL: "http://127.0.0.1:9102",
    INVENTORY_URL: "http://127.0.0.1:9103",
    PAYMENTS_URL: "http://127.0.0.1:9104",
  };
  const key = randomBytes(32).toString("base64");
  const config = loadConfig(ordersConfigSchema, { ...env, SAGA_CARD_KEY: key });
  assert.equal(config.SAGA_CARD_KEY.length, 32);
  assert.equal(config.SAGA_CONCURRENCY, 32);

  for (const bad of [{}, { SAGA_CARD_KEY: "c2hvcnQ=" }]) {
    assert.throws(
      () => loadConfig(ordersConfigSchema, { ...env, ...bad }),
      (e: unknown) =>
        e instanceof ConfigError &&
        /SAGA_CARD_KEY:/.test(e.message) &&
        !e.message.includes("c2hvcnQ="),
    );
  }
  assert.throws(
    () =>
      loadConfig(ordersConfigSchema, {
        ...env,
        SAGA_CARD_KEY: key,
        SAGA_STEP_TIMEOUT_MS: "5000",
        SAGA_LEASE_MS: "5000",
      }),
    /SAGA_LEASE_MS/,
  );
  assert.throws(
    () => loadConfig(ordersConfigSchema, { ...env, SAGA_CARD_KEY: key, PAYMENTS_URL: "payments" }),
    /PAYMENTS_URL/,
  );
});
