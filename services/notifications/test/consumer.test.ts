import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { loadConfig, type ServiceHost } from "@meshmart/kit";
import { UserSignedUpSchema } from "@meshmart/kit/gen/meshmart/identity/v1/events_pb.js";
import { NotificationKind } from "@meshmart/kit/gen/meshmart/notifications/v1/notifications_pb.js";
import { NotificationService } from "@meshmart/kit/gen/meshmart/notifications/v1/notifications_service_pb.js";
import {
  OrderCancelledSchema,
  OrderConfirmedSchema,
} from "@meshmart/kit/gen/meshmart/orders/v1/events_pb.js";
import { CancelCode, OrderStatus } from "@meshmart/kit/gen/meshmart/orders/v1/orders_pb.js";
import {
  createLogSink,
  createTestDatabase,
  createTestIssuer,
  type LogSink,
  openTestEvents,
  rejection,
  type TestDatabase,
  type TestEvents,
  type TestIssuer,
  testRedisUrl,
  violationsOf,
  waitFor,
} from "@meshmart/kit/testing";
import postgres from "postgres";
import { notificationsConfigSchema } from "../src/config.js";
import type { NotificationSender } from "../src/sender.js";
import { startNotifications } from "../src/server.js";
import type { NotificationRow } from "../src/store.js";

// The real notifications service on port 0: identity's and orders' events arrive over a
// run-unique JetStream namespace, notifications come out through the API.
let db: TestDatabase;
let events: TestEvents;
let issuer: TestIssuer;
let host: ServiceHost;
let logs: LogSink;
let client: Client<typeof NotificationService>;
let sql: postgres.Sql;
const sent: NotificationRow[] = [];
let failNextSends = 0;

const sender: NotificationSender = {
  async send(n) {
    if (failNextSends > 0) {
      failNextSends -= 1;
      throw new Error("mail server said no");
    }
    sent.push(n);
  },
};

before(async () => {
  [db, events, issuer] = await Promise.all([
    createTestDatabase("notifications"),
    openTestEvents("notif"),
    createTestIssuer(),
  ]);
  logs = createLogSink();
  const config = loadConfig(notificationsConfigSchema, {
    SERVICE_NAME: "notifications",
    GRPC_PORT: "0",
    HTTP_PORT: "0",
    ADMIN_PORT: "0",
    LOG_LEVEL: "debug",
    DATABASE_URL: db.url,
    REDIS_URL: await testRedisUrl(),
    CONSUMER_MAX_DELIVER: "3",
    ...events.env,
  });
  host = await startNotifications(config, {
    logDestination: logs.stream,
    verifier: issuer.verifier,
    sender,
  });
  client = createClient(
    NotificationService,
    createGrpcTransport({ baseUrl: `http://${host.grpcTarget}` }),
  );
  sql = postgres(db.url, { max: 2 });
});

after(async () => {
  await host?.close();
  await sql?.end();
  await events?.close();
  await db?.drop();
});

async function as(userId: string) {
  const token = await issuer.token({ sub: userId, roles: ["customer"] });
  return { headers: { authorization: `Bearer ${token}` } };
}

function order(userId: string, orderId: string, status: OrderStatus) {
  return {
    id: orderId,
    userId,
    status,
    items: [
      {
        productId: randomUUID(),
        sku: "KTL-1",
        name: "Kettle",
        quantity: 2,
        unitPrice: { currencyCode: "EUR", units: 10n, nanos: 500_000_000 },
        lineTotal: { currencyCode: "EUR", units: 21n },
      },
    ],
    total: { currencyCode: "EUR", units: 21n },
    cardLast4: "4242",
  };
}

async function notificationsOf(userId: string) {
  const { notifications } = await client.listNotifications({ pageSize: 100 }, await as(userId));
  return notifications;
}

test("a signup, then a confirmed and a cancelled order: one notification each, addressed", async () => {
  const userId = randomUUID();
  const confirmedId = randomUUID();
  const cancelledId = randomUUID();
  await events.publish(UserSignedUpSchema, {
    userId,
    email: "ada@example.com",
    displayName: "Ada",
  });
  await waitFor("the welcome", async () => (await notificationsOf(userId)).length === 1);
  await events.publish(OrderConfirmedSchema, {
    orderId: confirmedId,
    userId,
    order: order(userId, confirmedId, OrderStatus.CONFIRMED),
  });
  await events.publish(OrderCancelledSchema, {
    orderId: cancelledId,
    userId,
    order: {
      ...order(userId, cancelledId, OrderStatus.CANCELLED),
      cancelCode: CancelCode.PAYMENT_DECLINED,
      cancelReason: "payment declined: card declined",
    },
  });
  const list = await waitFor("three notifications", async () => {
    const n = await notificationsOf(userId);
    return n.length === 3 ? n : undefined;
  });
  const byKind = new Map(list.map((n) => [n.kind, n]));
  assert.equal(byKind.get(NotificationKind.WELCOME)?.recipient, "ada@example.com");
  const confirmed = byKind.get(NotificationKind.ORDER_CONFIRMED);
  assert.equal(confirmed?.orderId, confirmedId);
  assert.equal(confirmed?.recipient, "ada@example.com");
  assert.match(confirmed?.body ?? "", /2 x Kettle/);
  assert.match(confirmed?.body ?? "", /EUR 21\.00/);
  const cancelled = byKind.get(NotificationKind.ORDER_CANCELLED);
  assert.match(cancelled?.body ?? "", /payment declined: card declined/);
  // Newest first.
  assert.deepEqual(
    list.map((n) => n.createTime?.seconds),
    [...list.map((n) => n.createTime?.seconds)].sort((a, b) => Number((b ?? 0n) - (a ?? 0n))),
  );
  // Someone else sees none of them; nobody sees anything without a token.
  assert.equal((await notificationsOf(randomUUID())).length, 0);
  const anonymous = await rejection(client.listNotifications({}));
  assert.equal(anonymous.code, 16);
});

test("a redelivered event (same event_id, new message) yields no second notification", async () => {
  const userId = randomUUID();
  const orderId = randomUUID();
  const eventId = randomUUID();
  const event = { eventId, orderId, userId, order: order(userId, orderId, OrderStatus.CONFIRMED) };
  await events.publish(OrderConfirmedSchema, event);
  await events.publish(OrderConfirmedSchema, event);
  await waitFor("the notification", async () => (await notificationsOf(userId)).length === 1);
  // Both copies acknowledged: the second was handled (and skipped by the inbox).
  await waitFor("both copies acknowledged", async () => {
    const info = await events.jsm.consumers.info(events.names.stream("orders"), "notifications");
    return info.num_ack_pending === 0 && info.num_pending === 0;
  });
  assert.equal((await notificationsOf(userId)).length, 1);
  assert.equal(sent.filter((n) => n.source_event_id === eventId).length, 1);
  // An order whose user never signed up (here) is still recorded, addressed to no one.
  assert.equal((await notificationsOf(userId))[0]?.recipient, "");
});

test("a failing sender retries the event, and nothing is recorded twice", async () => {
  const userId = randomUUID();
  const orderId = randomUUID();
  failNextSends = 1;
  await events.publish(OrderConfirmedSchema, {
    orderId,
    userId,
    order: order(userId, orderId, OrderStatus.CONFIRMED),
  });
  await waitFor(
    "the retried notification",
    async () => (await notificationsOf(userId)).length === 1,
    15_000,
  );
  assert.equal(failNextSends, 0);
  assert.equal(sent.filter((n) => n.order_id === orderId).length, 1);
});

test("a poison message is dead-lettered and later events still flow", async () => {
  await events.publish(OrderConfirmedSchema, {}, { payload: new Uint8Array([0xff, 0xff, 0xff]) });
  const userId = randomUUID();
  const orderId = randomUUID();
  await events.publish(OrderConfirmedSchema, {
    orderId,
    userId,
    order: order(userId, orderId, OrderStatus.CONFIRMED),
  });
  await waitFor("the later notification", async () => (await notificationsOf(userId)).length === 1);
  const dead = await waitFor("the dead letter", async () => {
    const messages = await events.read(events.names.deadLetterStream);
    return messages.length > 0 ? messages : undefined;
  });
  assert.equal(dead.length, 1);
  assert.match(dead[0]?.header.get("Meshmart-Dead-Letter-Reason") ?? "", /.+/);
});

test("pages walk every notification once, newest first; order_id filters", async () => {
  const userId = randomUUID();
  const orderIds = Array.from({ length: 5 }, () => randomUUID());
  for (const orderId of orderIds) {
    await events.publish(OrderConfirmedSchema, {
      orderId,
      userId,
      order: order(userId, orderId, OrderStatus.CONFIRMED),
    });
  }
  await waitFor("five notifications", async () => (await notificationsOf(userId)).length === 5);
  const auth = await as(userId);
  const seen: string[] = [];
  let pageToken = "";
  do {
    const page = await client.listNotifications({ pageSize: 2, pageToken }, auth);
    seen.push(...page.notifications.map((n) => n.id));
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  assert.equal(seen.length, 5);
  assert.equal(new Set(seen).size, 5);
  const one = await client.listNotifications({ orderId: orderIds[2] ?? "" }, auth);
  assert.deepEqual(
    one.notifications.map((n) => n.orderId),
    [orderIds[2]],
  );
  const first = await client.listNotifications({ pageSize: 2 }, auth);
  const crossed = await rejection(
    client.listNotifications({ pageToken: first.nextPageToken, orderId: orderIds[0] ?? "" }, auth),
  );
  assert.equal(crossed.code, 3);
  // A cursor the client wrote itself (the unsigned format tokens once had) is refused,
  // naming page_token, instead of paging from wherever it points.
  const crafted = Buffer.from(
    JSON.stringify({ t: "2999-01-01 00:00:00+00", i: randomUUID(), o: "" }),
  ).toString("base64url");
  const forged = await rejection(client.listNotifications({ pageToken: crafted }, auth));
  assert.deepEqual(violationsOf(forged), [{ path: "page_token", rule: "page_token.issued" }]);
});

test("no log line carries an email address or a notification body", () => {
  const text = logs.text();
  assert.doesNotMatch(text, /ada@example\.com/);
  assert.doesNotMatch(text, /Kettle/);
});

test("pages keep microsecond order: rows within one millisecond are neither skipped nor repeated", async () => {
  const userId = randomUUID();
  // Five notifications 1 µs apart, all in the same millisecond: a cursor rounded to the
  // millisecond anywhere on its way would skip the ones after it.
  for (let i = 0; i < 5; i++) {
    await sql`
      insert into notifications (id, user_id, kind, channel, recipient, subject, body, source_event_id, created_at)
      values (${randomUUID()}, ${userId}, 2, 1, '', 's', 'b', ${randomUUID()},
              '2026-01-01 00:00:00.000100+00'::timestamptz + ${`${i} microseconds`}::interval)`;
  }
  const auth = await as(userId);
  const seen: string[] = [];
  let pageToken = "";
  do {
    const page = await client.listNotifications({ pageSize: 1, pageToken }, auth);
    seen.push(...page.notifications.map((n) => n.id));
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  assert.equal(seen.length, 5);
  assert.equal(new Set(seen).size, 5);
});
