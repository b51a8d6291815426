import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { type CallOptions, type Client, Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ConfigError, createLogger, createPostgres, loadConfig, type Sql } from "@meshmart/kit";
import { ReservationStatus } from "@meshmart/kit/gen/meshmart/inventory/v1/inventory_pb.js";
import { InventoryService } from "@meshmart/kit/gen/meshmart/inventory/v1/inventory_service_pb.js";
import {
  createTestDatabase,
  createTestIssuer,
  type TestDatabase,
  type TestIssuer,
} from "@meshmart/kit/testing";
import { inventoryConfigSchema } from "../src/config.js";
import { errorInfosOf, rejection } from "./support/inventory-fixture.js";
import {
  inventoryEnv,
  jetStreamApi,
  type RunningInventory,
  startTestInventory,
} from "./support/inventory-server.js";

const SERVICE = "meshmart.inventory.v1.InventoryService";

describe("inventory config", () => {
  const base = inventoryEnv("postgres://x@localhost/inventory", {
    redisUrl: "redis://localhost:6379",
    natsUrl: "nats://localhost:4222",
    namespace: "meshmart",
  });

  test("defaults: 15 minute reservation TTL, 30 s sweeps, no demo seed", () => {
    const config = loadConfig(inventoryConfigSchema, base);
    assert.equal(config.RESERVATION_TTL_MS, 900_000);
    assert.equal(config.RESERVATION_SWEEP_INTERVAL_MS, 30_000);
    assert.equal(config.RESERVATION_SWEEP_BATCH, 100);
    assert.equal(config.SEED_DEMO, false);
    assert.equal(config.EVENTS_NAMESPACE, "meshmart");
  });

  test("bad or missing values are refused by name", () => {
    const { DATABASE_URL: _, ...missing } = base;
    assert.throws(() => loadConfig(inventoryConfigSchema, missing), /DATABASE_URL/);
    for (const [name, value] of [
      ["RESERVATION_TTL_MS", "0"],
      ["RESERVATION_SWEEP_INTERVAL_MS", "soon"],
      ["REDIS_URL", "localhost:6379"],
      ["NATS_URL", "localhost:4222"],
      ["SEED_DEMO", "maybe"],
    ] as const) {
      assert.throws(
        () => loadConfig(inventoryConfigSchema, { ...base, [name]: value }),
        (e: unknown) => e instanceof ConfigError && e.message.includes(name),
        name,
      );
    }
  });
});

/** A gRPC client of a running inventory and an admin's call options. */
async function connect(running: RunningInventory, issuer: TestIssuer) {
  const client: Client<typeof InventoryService> = createClient(
    InventoryService,
    createGrpcTransport({ baseUrl: `http://${running.host.grpcTarget}` }),
  );
  const admin: CallOptions = {
    headers: { authorization: `Bearer ${await issuer.token({ roles: ["admin"] })}` },
  };
  return { client, admin };
}

// The real server (startInventory: three listeners, migrations, relay, sweeper) on port 0.
describe("inventory server", () => {
  let db: TestDatabase;
  let issuer: TestIssuer;
  let running: RunningInventory;
  let client: Client<typeof InventoryService>;
  let admin: CallOptions;
  let sql: Sql;

  before(async () => {
    [db, issuer] = await Promise.all([createTestDatabase("inventory_server"), createTestIssuer()]);
    running = await startTestInventory({ databaseUrl: db.url, issuer });
    ({ client, admin } = await connect(running, issuer));
    sql = createPostgres({
      url: db.url,
      service: "inventory-test",
      logger: createLogger({ service: "inventory-test", level: "silent" }),
      max: 1,
    });
  });
  after(async () => {
    await sql?.end({ timeout: 5 });
    await running?.stop();
    await db?.drop();
  });

  test("serves InventoryService", () => {
    assert.ok(running.host.services.includes(SERVICE), running.host.services.join(", "));
  });

  test("a saga's path over gRPC: set, reserve, refuse with ErrorInfo, commit", async () => {
    const productId = randomUUID();
    await client.setStock({ productId, sku: "SRV-001", onHand: 3n }, admin);
    const orderId = randomUUID();
    const reserved = await client.reserveStock({ orderId, items: [{ productId, quantity: 2 }] });
    assert.equal(reserved.reservation?.status, ReservationStatus.RESERVED);

    const short = await rejection(
      client.reserveStock({ orderId: randomUUID(), items: [{ productId, quantity: 2 }] }),
    );
    assert.equal(short.code, Code.FailedPrecondition);
    const [info] = errorInfosOf(short);
    assert.equal(info?.reason, "INSUFFICIENT_STOCK", "ErrorInfo survives the gRPC wire");
    assert.equal(info?.metadata.product_id, productId);

    const committed = await client.commitReservation({ orderId });
    assert.equal(committed.reservation?.status, ReservationStatus.COMMITTED);
    const { stock } = await client.getStock({ key: { case: "sku", value: "SRV-001" } });
    assert.deepEqual([stock?.onHand, stock?.reserved, stock?.available], [1n, 0n, 1n]);

    const rows = await sql<{ event_type: string }[]>`
      select event_type from event_outbox order by seq`;
    assert.deepEqual(
      rows.map((r) => r.event_type),
      [
        "meshmart.inventory.v1.StockLevelChanged",
        "meshmart.inventory.v1.StockReserved",
        "meshmart.inventory.v1.StockLevelChanged",
        "meshmart.inventory.v1.StockCommitted",
        "meshmart.inventory.v1.StockLevelChanged",
      ],
    );
  });

  test("the relay publishes the outbox to the inventory stream", async () => {
    const stream = running.names.stream("inventory");
    const deadline = Date.now() + 10_000;
    for (;;) {
      const [pending] = await sql<{ n: bigint; total: bigint }[]>`
        select count(*) filter (where published_at is null) as n, count(*) as total
        from event_outbox`;
      if (pending?.n === 0n && (pending.total ?? 0n) > 0n) {
        const info = (await jetStreamApi(running.natsUrl, `STREAM.INFO.${stream}`)) as {
          state?: { messages?: number };
        };
        assert.equal(BigInt(info.state?.messages ?? -1), pending.total, "one message per row");
        return;
      }
      assert.ok(Date.now() < deadline, "outbox published within 10 s");
      await new Promise((r) => setTimeout(r, 50));
    }
  });

  test("Connect JSON on the HTTP port carries the ErrorInfo detail too", async () => {
    const res = await fetch(`${running.host.httpUrl}/${SERVICE}/ReserveStock`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        orderId: randomUUID(),
        items: [{ productId: randomUUID(), quantity: 1 }],
      }),
    });
    assert.equal(res.status, 404);
    const body = (await res.json()) as { code: string; details?: { type: string }[] };
    assert.equal(body.code, "not_found");
    assert.deepEqual(
      body.details?.map((d) => d.type),
      ["google.rpc.ErrorInfo"],
    );
  });

  test("SetStock over gRPC without a token is UNAUTHENTICATED", async () => {
    const err = await rejection(client.setStock({ productId: randomUUID(), onHand: 1n }));
    assert.equal(err.code, Code.Unauthenticated);
  });
});

// The sweeper as startInventory wires it, with a TTL short enough to watch it expire.
describe("inventory server: reservation expiry", () => {
  let db: TestDatabase;
  let issuer: TestIssuer;
  let running: RunningInventory;

  before(async () => {
    [db, issuer] = await Promise.all([createTestDatabase("inventory_expiry"), createTestIssuer()]);
    running = await startTestInventory({
      databaseUrl: db.url,
      issuer,
      env: { RESERVATION_TTL_MS: "300", RESERVATION_SWEEP_INTERVAL_MS: "50" },
    });
  });
  after(async () => {
    await running?.stop();
    await db?.drop();
  });

  test("an abandoned reservation is released after RESERVATION_TTL_MS", async () => {
    const { client, admin } = await connect(running, issuer);
    const productId = randomUUID();
    await client.setStock({ productId, onHand: 2n }, admin);
    const orderId = randomUUID();
    await client.reserveStock({ orderId, items: [{ productId, quantity: 2 }] });
    const deadline = Date.now() + 10_000;
    for (;;) {
      const { reservation } = await client.getReservation({ orderId });
      if (reservation?.status === ReservationStatus.RELEASED) break;
      assert.ok(Date.now() < deadline, "released within 10 s");
      await new Promise((r) => setTimeout(r, 50));
    }
    const { stock } = await client.getStock({ key: { case: "productId", value: productId } });
    assert.equal(stock?.available, 2n);
    const metrics = await (await fetch(`${running.host.adminUrl}/metrics`)).text();
    assert.match(metrics, /inventory_reservations_expired_total(\{[^}]*\})? 1/);
    assert.ok(
      running.logs.lines().some((l) => l.msg === "expired reservation released"),
      "logged",
    );
  });
});
