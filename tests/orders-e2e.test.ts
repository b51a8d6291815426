import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createEventNames, createLogger, createPostgres, type Sql } from "@meshmart/kit";
import { InventoryService } from "@meshmart/kit/gen/meshmart/inventory/v1/inventory_service_pb.js";
import { waitFor } from "@meshmart/kit/testing";
import { createPaymentsStore } from "@meshmart/payments/store";
import { type Mesh, startMesh } from "./support/mesh.js";
import { createRestCall, type Json } from "./support/rest.js";

// The store end to end, as a customer meets it: every service as its own process, the
// REST edge in front, real Postgres and NATS JetStream behind. A good card confirms; a
// declined one cancels with the stock back and nothing charged; each ends in one
// notification.
let mesh: Mesh;
let paymentsDb: Sql;

before(async () => {
  mesh = await startMesh({ label: "e2e", edge: true });
  paymentsDb = createPostgres({
    url: mesh.databaseUrl("payments"),
    service: "e2e",
    logger: createLogger({ service: "e2e", level: "silent" }),
    max: 2,
  });
});

after(async () => {
  await paymentsDb?.end({ timeout: 1 });
  await mesh?.stop();
});

const rest = createRestCall(() => mesh.edgeUrl);

const card = (number: string) => ({ number, expMonth: 12, expYear: 2030, cvc: "123" });

function inventory() {
  return createClient(
    InventoryService,
    createGrpcTransport({ baseUrl: `http://127.0.0.1:${mesh.ports("inventory").grpc}` }),
  );
}

async function available(productId: string): Promise<bigint> {
  const { stock } = await inventory().getStock({ key: { case: "productId", value: productId } });
  return stock?.available ?? -1n;
}

async function untilTerminal(orderId: string, token: string): Promise<Json> {
  return waitFor(
    `order ${orderId} to finish`,
    async () => {
      const { order } = await rest("GET", `/v1/orders/${orderId}`, undefined, token);
      return order.status === "ORDER_STATUS_PENDING" ? undefined : order;
    },
    30_000,
  );
}

test("signup, login, browse; a good card confirms and a declined one cancels, each notified", async () => {
  const email = `shopper-${randomUUID()}@example.com`;
  const password = "correct horse battery staple";
  await rest("POST", "/v1/users", { email, password, displayName: "Shopper" });
  const { accessToken } = await rest("POST", "/v1/sessions", { email, password });
  assert.ok(accessToken);

  const { products } = await rest("GET", "/v1/products?page_size=5");
  assert.ok(products.length >= 2, "the demo catalog is seeded");
  const [kettle, grinder] = products;
  // Inventory learned the products from catalog's events.
  const before = await waitFor("demo stock", async () => {
    const [a, b] = [await available(kettle.id), await available(grinder.id)];
    return a > 0n && b > 0n ? { kettle: a, grinder: b } : undefined;
  });

  const placed = await rest(
    "POST",
    "/v1/orders",
    {
      requestId: randomUUID(),
      items: [
        { productId: kettle.id, quantity: 2 },
        { productId: grinder.id, quantity: 1 },
      ],
      payment: { card: card("4242424242424242") },
    },
    accessToken,
  );
  assert.equal(placed.order.status, "ORDER_STATUS_PENDING");
  const confirmed = await untilTerminal(placed.order.id, accessToken);
  assert.equal(confirmed.status, "ORDER_STATUS_CONFIRMED");
  assert.equal(confirmed.cardLast4, "4242");
  // Prices are catalog's, not the client's.
  assert.deepEqual(confirmed.items[0].unitPrice, kettle.price);
  assert.equal(await available(kettle.id), before.kettle - 2n);

  const declined = await rest(
    "POST",
    "/v1/orders",
    {
      requestId: randomUUID(),
      items: [{ productId: kettle.id, quantity: 1 }],
      payment: { card: card("4000000000000002") },
    },
    accessToken,
  );
  const cancelled = await untilTerminal(declined.order.id, accessToken);
  assert.equal(cancelled.status, "ORDER_STATUS_CANCELLED");
  assert.equal(cancelled.cancelCode, "CANCEL_CODE_PAYMENT_DECLINED");
  assert.ok(cancelled.cancelReason.length > 0);
  // Stock back, nothing charged.
  assert.equal(await available(kettle.id), before.kettle - 2n);
  const payments = createPaymentsStore(paymentsDb, createEventNames(mesh.namespace));
  const net = await payments.netCapturedByOrder([placed.order.id, declined.order.id]);
  const byOrder = new Map(net.map((n) => [n.order_id, n]));
  assert.equal(byOrder.get(declined.order.id)?.net_minor ?? 0n, 0n);
  assert.ok((byOrder.get(placed.order.id)?.net_minor ?? 0n) > 0n);

  // One notification per terminal order (plus the welcome), through the edge.
  const notifications = await waitFor(
    "the order notifications",
    async () => {
      const { notifications } = await rest("GET", "/v1/notifications", undefined, accessToken);
      const about = (id: string) => notifications.filter((n: Json) => n.orderId === id);
      return about(placed.order.id).length === 1 && about(declined.order.id).length === 1
        ? notifications
        : undefined;
    },
    30_000,
  );
  const kinds = notifications.map((n: Json) => n.kind).sort();
  assert.deepEqual(kinds, [
    "NOTIFICATION_KIND_ORDER_CANCELLED",
    "NOTIFICATION_KIND_ORDER_CONFIRMED",
    "NOTIFICATION_KIND_WELCOME",
  ]);
  assert.ok(notifications.every((n: Json) => n.recipient === email));

  // The customer's order list has both, newest first.
  const { orders } = await rest("GET", "/v1/orders", undefined, accessToken);
  assert.deepEqual(
    orders.map((o: Json) => o.id),
    [declined.order.id, placed.order.id],
  );
});

test("GET /v1/orders/{id}:watch streams the order as a growing JSON array until it is terminal", async () => {
  const email = `watcher-${randomUUID()}@example.com`;
  const password = "correct horse battery staple";
  await rest("POST", "/v1/users", { email, password, displayName: "Watcher" });
  const { accessToken } = await rest("POST", "/v1/sessions", { email, password });
  const { products } = await rest("GET", "/v1/products?page_size=1");
  const placed = await rest(
    "POST",
    "/v1/orders",
    {
      requestId: randomUUID(),
      items: [{ productId: products[0].id, quantity: 1 }],
      payment: { card: card("4242424242424242") },
    },
    accessToken,
  );

  const res = await fetch(`${mesh.edgeUrl}/v1/orders/${placed.order.id}:watch`, {
    headers: { authorization: `Bearer ${accessToken}` },
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "application/json");
  const text = await res.text();
  // Envoy's transcoder shape: "[" first, "," next, …, "]" once the stream ended.
  assert.match(text, /^\[\{.*\}\]$/s);
  const states = JSON.parse(text) as Json[];
  assert.ok(states.every((s) => s.order.id === placed.order.id));
  const statuses = states.map((s) => s.order.status as string);
  assert.equal(statuses.at(-1), "ORDER_STATUS_CONFIRMED");
  assert.ok(
    statuses.slice(0, -1).every((s) => s === "ORDER_STATUS_PENDING"),
    statuses.join(),
  );

  // Failures before the first message are ordinary REST errors with a google.rpc.Status body.
  const missing = await fetch(`${mesh.edgeUrl}/v1/orders/${randomUUID()}:watch`, {
    headers: { authorization: `Bearer ${accessToken}` },
  });
  assert.equal(missing.status, 404);
  assert.equal(((await missing.json()) as Json).code, 5);
  const anonymous = await fetch(`${mesh.edgeUrl}/v1/orders/${placed.order.id}:watch`);
  assert.equal(anonymous.status, 401);
  await anonymous.body?.cancel();
});
