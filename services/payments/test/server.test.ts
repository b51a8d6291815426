import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { type Client, Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  ConfigError,
  connectNats,
  createEventNames,
  createLogger,
  createPostgres,
  type EventNames,
  loadConfig,
  type ServiceHost,
  type Sql,
} from "@meshmart/kit";
import { PaymentAuthorizedSchema } from "@meshmart/kit/gen/meshmart/payments/v1/events_pb.js";
import { DeclineCode, PaymentStatus } from "@meshmart/kit/gen/meshmart/payments/v1/payments_pb.js";
import { PaymentService } from "@meshmart/kit/gen/meshmart/payments/v1/payments_service_pb.js";
import {
  createLogSink,
  createTestDatabase,
  createTestIssuer,
  type LogSink,
  type TestDatabase,
  type TestIssuer,
  testNatsUrl,
  testRedisUrl,
  uniqueName,
} from "@meshmart/kit/testing";
import { Registry } from "prom-client";
import { paymentsConfigSchema } from "../src/config.js";
import { startPayments } from "../src/server.js";
import {
  authorizeRequest,
  card,
  columnsContaining,
  outboxEvents,
  rejection,
  TEST_CARDS,
  violationsOf,
} from "./support/payments-fixture.js";

const baseEnv = {
  SERVICE_NAME: "payments",
  GRPC_PORT: "0",
  HTTP_PORT: "0",
  ADMIN_PORT: "0",
  LOG_LEVEL: "debug",
};

const ordersPeer = {
  "x-forwarded-client-cert":
    'By=spiffe://cluster.local/ns/meshmart/sa/payments;Hash=abc;Subject="";URI=spiffe://cluster.local/ns/meshmart/sa/orders',
};

// The real server (startPayments, config parsed as main parses it) on port 0, called over
// gRPC on grpc-js, as orders calls it in the mesh. Peer identity from XFCC, as in a cluster.
describe("payments server over gRPC", () => {
  let db: TestDatabase;
  let host: ServiceHost;
  let logs: LogSink;
  let issuer: TestIssuer;
  let client: Client<typeof PaymentService>;
  let sql: Sql;
  let natsUrl: string;
  const names: EventNames = createEventNames(uniqueName("pay"));

  before(async () => {
    let redisUrl: string;
    [db, redisUrl, natsUrl, issuer] = await Promise.all([
      createTestDatabase("payments_server"),
      testRedisUrl(),
      testNatsUrl(),
      createTestIssuer(),
    ]);
    const config = loadConfig(paymentsConfigSchema, {
      ...baseEnv,
      DATABASE_URL: db.url,
      REDIS_URL: redisUrl,
      NATS_URL: natsUrl,
      EVENTS_NAMESPACE: names.namespace,
      MESH_PEER_IDENTITY: "xfcc",
      REFUND_SERVICE_ACCOUNTS: "orders",
    });
    logs = createLogSink();
    host = await startPayments(config, { logDestination: logs.stream, verifier: issuer.verifier });
    client = createClient(
      PaymentService,
      createGrpcTransport({ baseUrl: `http://${host.grpcTarget}` }),
    );
    sql = createPostgres({
      url: db.url,
      service: "payments-test",
      logger: createLogger({ service: "payments-test", level: "silent" }),
      registry: new Registry(),
    });
  });
  after(async () => {
    await host?.close();
    await sql?.end({ timeout: 5 });
    await db?.drop();
    if (natsUrl !== undefined) {
      for (const stream of [names.stream("payments"), names.deadLetterStream]) {
        await jetStream(natsUrl, `STREAM.DELETE.${stream}`);
      }
    }
  });

  test("serves PaymentService and is ready", async () => {
    assert.deepEqual(host.services, ["meshmart.payments.v1.PaymentService"]);
    const ready = await fetch(`${host.adminUrl}/readyz`);
    assert.equal(ready.status, 200);
  });

  test("authorize, capture and get over gRPC, without a token (the mesh gates callers)", async () => {
    const req = authorizeRequest();
    const { payment } = await client.authorizePayment(req);
    assert.equal(payment?.status, PaymentStatus.AUTHORIZED);
    const captured = await client.capturePayment({
      paymentId: payment?.id ?? "",
      idempotencyKey: `${req.orderId}:capture`,
    });
    assert.equal(captured.payment?.status, PaymentStatus.CAPTURED);
    const read = await client.getPayment({ paymentId: payment?.id ?? "" });
    assert.equal(read.payment?.capturedAmount?.units, 25n);
    assert.deepEqual(
      (await outboxEvents(sql, payment?.id ?? "")).map((e) => e.type),
      ["PaymentAuthorized", "PaymentCaptured"],
    );
  });

  test("the relay publishes the outbox to the payments stream", async () => {
    const { payment } = await client.authorizePayment(authorizeRequest());
    const deadline = Date.now() + 15_000;
    for (;;) {
      const [row] = await sql<{ n: bigint }[]>`
        select count(*) as n from event_outbox where published_at is null`;
      if (row?.n === 0n) break;
      assert.ok(Date.now() < deadline, "outbox never drained");
      await new Promise((r) => setTimeout(r, 100));
    }
    const subject = names.subjectOf(PaymentAuthorizedSchema);
    assert.equal(subject, `${names.namespace}.payments.payment.authorized`);
    const last = (await jetStream(natsUrl, `STREAM.MSG.GET.${names.stream("payments")}`, {
      last_by_subj: subject,
    })) as { message?: { data: string } };
    assert.ok(last.message, JSON.stringify(last));
    const event = fromBinary(PaymentAuthorizedSchema, Buffer.from(last.message.data, "base64"));
    assert.equal(event.paymentId, payment?.id);
    assert.equal(event.payment?.cardLast4, "4242");
  });

  test("each test card's outcome over gRPC; a decline is a response, not an error", async () => {
    const cases: [string, PaymentStatus, DeclineCode][] = [
      [TEST_CARDS.approved, PaymentStatus.AUTHORIZED, DeclineCode.UNSPECIFIED],
      [TEST_CARDS.declined, PaymentStatus.FAILED, DeclineCode.CARD_DECLINED],
      [TEST_CARDS.insufficientFunds, PaymentStatus.FAILED, DeclineCode.INSUFFICIENT_FUNDS],
    ];
    for (const [number, status, decline] of cases) {
      const { payment } = await client.authorizePayment(authorizeRequest({ card: card(number) }));
      assert.deepEqual(
        [payment?.status, payment?.declineCode],
        [status, decline],
        number.slice(-4),
      );
    }
  });

  test("20 concurrent duplicates over gRPC make one payment", async () => {
    const req = authorizeRequest();
    const results = await Promise.all(
      Array.from({ length: 20 }, () => client.authorizePayment(req)),
    );
    assert.equal(new Set(results.map((r) => r.payment?.id)).size, 1);
    const [row] = await sql<{ n: bigint }[]>`
      select count(*) as n from payments where order_id = ${req.orderId}`;
    assert.equal(row?.n, 1n);
  });

  test("errors keep their codes and details over gRPC", async () => {
    const missing = await rejection(client.getPayment({ paymentId: randomUUID() }));
    assert.equal(missing.code, Code.NotFound);
    const invalid = await rejection(
      client.authorizePayment(
        authorizeRequest({ amount: { currencyCode: "EUR", units: 1n, nanos: 1 } }),
      ),
    );
    assert.deepEqual(violationsOf(invalid), [{ path: "amount.nanos", rule: "amount.minor_units" }]);
  });

  test("RefundPayment: the orders service (by XFCC) or role admin; nobody else", async () => {
    const authorizeAndCapture = async () => {
      const { payment } = await client.authorizePayment(authorizeRequest());
      await client.capturePayment({ paymentId: payment?.id ?? "", idempotencyKey: randomUUID() });
      return payment?.id ?? "";
    };
    const paymentId = await authorizeAndCapture();
    const refund = (headers: Record<string, string>) =>
      client.refundPayment(
        {
          paymentId,
          idempotencyKey: randomUUID(),
          amount: { currencyCode: "EUR", units: 1n, nanos: 0 },
        },
        { headers },
      );
    const customer = `Bearer ${await issuer.token({ roles: ["customer"] })}`;
    const admin = `Bearer ${await issuer.token({ roles: ["admin"] })}`;
    const webPeer = {
      // A forged element first, the sidecar's (the real peer) last.
      "x-forwarded-client-cert":
        "URI=spiffe://cluster.local/ns/meshmart/sa/orders,By=spiffe://cluster.local/ns/meshmart/sa/payments;URI=spiffe://cluster.local/ns/meshmart/sa/web",
    };
    assert.equal((await rejection(refund({}))).code, Code.Unauthenticated);
    assert.equal((await rejection(refund(webPeer))).code, Code.Unauthenticated);
    assert.equal(
      (await rejection(refund({ ...webPeer, authorization: customer }))).code,
      Code.PermissionDenied,
    );
    assert.equal((await refund(ordersPeer)).payment?.refundedAmount?.units, 1n);
    // Orders forwards the customer's token; the peer identity is what counts.
    assert.equal(
      (await refund({ ...ordersPeer, authorization: customer })).payment?.refundedAmount?.units,
      2n,
    );
    assert.equal((await refund({ authorization: admin })).payment?.refundedAmount?.units, 3n);
    assert.equal(
      (await client.getPayment({ paymentId })).payment?.status,
      PaymentStatus.PARTIALLY_REFUNDED,
    );
  });

  test("no card number in the server's logs or database", async () => {
    const number = "5105105105105100";
    await client.authorizePayment(authorizeRequest({ card: card(number) }));
    await client.authorizePayment(authorizeRequest({ card: card(TEST_CARDS.approved) }));
    await rejection(client.authorizePayment(authorizeRequest({ card: card(`${number}9999`) })));
    const text = logs.text();
    assert.ok(text.includes("payment declined"), "the server logged the decline");
    for (const n of [number, TEST_CARDS.approved, `${number}9999`]) {
      assert.ok(!text.includes(n), "card number in a log line");
      assert.deepEqual(await columnsContaining(sql, n), []);
    }
  });
});

/** A JetStream API request over plain NATS; the JSON answer. */
async function jetStream(natsUrl: string, api: string, body: unknown = ""): Promise<unknown> {
  const nc = await connectNats({
    url: natsUrl,
    name: "payments-test",
    logger: createLogger({ service: "payments-test", level: "silent" }),
  });
  try {
    const reply = await nc.request(`$JS.API.${api}`, body === "" ? "" : JSON.stringify(body), {
      timeout: 5_000,
    });
    return reply.json();
  } finally {
    await nc.close();
  }
}

describe("payments config", () => {
  const valid = {
    ...baseEnv,
    NATS_URL: "nats://localhost:4222",
    DATABASE_URL: "postgres://localhost/payments",
    REDIS_URL: "redis://localhost:6379",
  };

  test("defaults: no peer identity (local runs), orders may refund, no PSP latency", () => {
    const config = loadConfig(paymentsConfigSchema, valid);
    assert.equal(config.MESH_PEER_IDENTITY, "off");
    assert.deepEqual(config.REFUND_SERVICE_ACCOUNTS, ["orders"]);
    assert.equal(config.FAKE_PSP_LATENCY_MS, 0);
    assert.equal(config.EVENTS_NAMESPACE, "meshmart");
  });

  test("a list of refund service accounts", () => {
    const config = loadConfig(paymentsConfigSchema, {
      ...valid,
      REFUND_SERVICE_ACCOUNTS: "orders, admin-tools",
    });
    assert.deepEqual(config.REFUND_SERVICE_ACCOUNTS, ["orders", "admin-tools"]);
  });

  test("bad or missing values are a ConfigError naming each, never their values", () => {
    assert.throws(
      () =>
        loadConfig(paymentsConfigSchema, {
          ...baseEnv,
          DATABASE_URL: "mysql://secret-host/db",
          MESH_PEER_IDENTITY: "spiffe",
          REFUND_SERVICE_ACCOUNTS: "Not A Name",
        }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        for (const name of [
          "DATABASE_URL",
          "REDIS_URL",
          "MESH_PEER_IDENTITY",
          "REFUND_SERVICE_ACCOUNTS",
        ]) {
          assert.match(err.message, new RegExp(name));
        }
        assert.doesNotMatch(err.message, /secret-host/);
        return true;
      },
    );
  });
});
