/**
 * The relay and a consumer across a NATS restart and a Postgres restart, each on a server
 * this file starts and owns (the shared ones on the standard ports are never touched).
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Sql } from "postgres";
import { Registry } from "prom-client";
import { ProductCreatedSchema } from "../gen/meshmart/catalog/v1/events_pb.js";
import { createPostgres } from "../src/data/postgres.js";
import { createEventConsumer, type EventConsumer, onEvent } from "../src/events/consumer.js";
import { listDeadLetters } from "../src/events/dead-letters.js";
import { createEventNames, type EventNames } from "../src/events/names.js";
import { connectNats } from "../src/events/nats.js";
import { migrateEventTables, newEvent, writeEvents } from "../src/events/outbox.js";
import { createOutboxRelay, type OutboxRelay } from "../src/events/relay.js";
import { ensureStreams } from "../src/events/streams.js";
import { findExecutable } from "../src/testing/apt.js";
import {
  freePort,
  type ManagedChild,
  type OwnedPostgres,
  startOwnedPostgres,
  uniqueName,
} from "../src/testing/index.js";
import {
  deleteNamespaceStreams,
  type EventsFixture,
  metricValue,
  openEventsFixture,
  publishEvent,
  silentLogger,
  startTestNats,
  testStreamSettings,
  waitFor,
} from "./events-support.js";

interface Pipeline {
  relay: OutboxRelay;
  consumer: EventConsumer;
  registry: Registry;
  stop(): Promise<void>;
}

/** A relay and a consumer recording ProductCreated events in `handled`. */
async function startPipeline(
  sql: Sql,
  nc: NatsConnection,
  names: EventNames,
  relayOptions: { pollIntervalMs: number; listenCheckMs?: number },
): Promise<Pipeline> {
  await sql`create table if not exists handled (product_id text)`;
  const registry = new Registry();
  const relay = createOutboxRelay({
    sql,
    nc,
    names,
    logger: silentLogger,
    registry,
    maxBackoffMs: 200,
    publishTimeoutMs: 1_000,
    ...relayOptions,
  });
  const consumer = createEventConsumer({
    sql,
    nc,
    names,
    durable: "resilient",
    domains: ["catalog"],
    handlers: [
      onEvent(ProductCreatedSchema, async (tx, event) => {
        await tx`insert into handled values (${event.productId})`;
      }),
    ],
    maxDeliver: 2,
    backoffMs: [50, 100],
    logger: silentLogger,
    registry,
  });
  relay.start();
  await consumer.start();
  return {
    relay,
    consumer,
    registry,
    async stop() {
      await consumer.stop();
      await relay.stop();
    },
  };
}

async function handled(sql: Sql): Promise<string[]> {
  const rows = await sql<{ product_id: string }[]>`
    select product_id from handled order by product_id`;
  return rows.map((r) => r.product_id);
}

async function write(sql: Sql, names: EventNames, productId: string): Promise<void> {
  await sql.begin((tx) => writeEvents(tx, names, [newEvent(ProductCreatedSchema, { productId })]));
}

const natsServer = await findExecutable("nats-server");

describe("across a NATS restart", { skip: natsServer === undefined && "no nats-server" }, () => {
  let fx: EventsFixture;
  let storeDir: string;
  let port: number;
  let server: ManagedChild | undefined;
  let nc: NatsConnection;
  const names = createEventNames(uniqueName("evr").slice(0, 32));

  const startNats = async () => {
    server = await startTestNats(natsServer ?? "nats-server", port, storeDir, "nats-server (test)");
  };

  before(async () => {
    fx = await openEventsFixture("kit_events_nats_restart", []);
    storeDir = await mkdtemp(join(tmpdir(), "meshmart-events-nats-"));
    port = await freePort();
    await startNats();
    nc = await connectNats({ url: `nats://127.0.0.1:${port}`, name: "test", logger: silentLogger });
    await ensureStreams(await jetstreamManager(nc), names, ["catalog"], testStreamSettings);
  });
  after(async () => {
    await nc?.close();
    await server?.stop();
    await rm(storeDir, { recursive: true, force: true });
    await fx.close();
  });

  test("events written while NATS is down are published and consumed once it is back", async () => {
    const pipeline = await startPipeline(fx.sql, nc, names, { pollIntervalMs: 50 });
    try {
      await write(fx.sql, names, "before");
      await waitFor("before handled", async () =>
        (await handled(fx.sql)).includes("before") ? true : undefined,
      );

      await server?.stop();
      await write(fx.sql, names, "during");
      await waitFor("the relay failing", async () =>
        (await metricValue(pipeline.registry, "outbox_publish_errors_total")) > 0
          ? true
          : undefined,
      );
      await startNats();

      await waitFor(
        "during handled",
        async () => ((await handled(fx.sql)).includes("during") ? true : undefined),
        20_000,
      );
      await write(fx.sql, names, "after");
      await waitFor("after handled", async () =>
        (await handled(fx.sql)).includes("after") ? true : undefined,
      );
      assert.deepEqual(await handled(fx.sql), ["after", "before", "during"]);
      const [row] = await fx.sql<{ n: string }[]>`
        select count(*)::text as n from event_outbox where published_at is null`;
      assert.equal(row?.n, "0");
    } finally {
      await pipeline.stop();
    }
  });
});

describe("across a Postgres restart", () => {
  let pg: OwnedPostgres;
  let sql: Sql;
  let nc: NatsConnection;
  let fx: EventsFixture;
  const names = createEventNames(uniqueName("evp").slice(0, 32));

  before(async () => {
    // Borrow only the shared NATS from the fixture; the database is our own cluster.
    fx = await openEventsFixture("kit_events_pg_restart_unused", []);
    nc = fx.nc;
    pg = await startOwnedPostgres();
    sql = createPostgres({ url: pg.url, service: "events-test", logger: silentLogger });
    await migrateEventTables(sql, silentLogger);
    await ensureStreams(fx.jsm, names, ["catalog"], testStreamSettings);
  });
  after(async () => {
    await deleteNamespaceStreams(fx.jsm, names);
    await sql.end({ timeout: 1 });
    await pg.dispose();
    await fx.close();
  });

  test("a consumer waits for the database instead of dead-lettering; the relay LISTENs again", async () => {
    // A long poll: after the restart only a re-established LISTEN publishes quickly.
    const pipeline = await startPipeline(sql, nc, names, {
      pollIntervalMs: 60_000,
      listenCheckMs: 200,
    });
    try {
      await write(sql, names, "before");
      await waitFor("before handled", async () =>
        (await handled(sql)).includes("before") ? true : undefined,
      );

      await pg.stop();
      await publishEvent({ js: fx.js, names }, ProductCreatedSchema, { productId: "during" });
      // Several deliveries fail meanwhile: more than maxDeliver (2).
      await waitFor("retries while the database is down", async () =>
        (await metricValue(pipeline.registry, "events_consumed_total", { outcome: "retried" })) >= 3
          ? true
          : undefined,
      );
      // Down long enough that postgres.js's own one-shot re-LISTEN has failed.
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      await pg.start();

      await waitFor(
        "during handled",
        async () => ((await handled(sql)).includes("during") ? true : undefined),
        20_000,
      );
      assert.deepEqual(await listDeadLetters(fx.jsm, names), []);

      // Give the LISTEN check a moment to notice and re-subscribe, then rely on NOTIFY.
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      await write(sql, names, "after");
      // Well inside the 60 s poll: only a re-established LISTEN explains it, even on a
      // loaded machine where reconnecting after the restart takes a few seconds.
      await waitFor(
        "after handled without waiting for the poll",
        async () => ((await handled(sql)).includes("after") ? true : undefined),
        20_000,
      );
      assert.deepEqual(await handled(sql), ["after", "before", "during"]);
    } finally {
      await pipeline.stop();
    }
  });
});
