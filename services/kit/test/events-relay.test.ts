import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net";
import { after, before, describe, test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { Registry } from "prom-client";
import {
  ProductCreatedSchema,
  ProductDeletedSchema,
} from "../gen/meshmart/catalog/v1/events_pb.js";
import { UserSignedUpSchema } from "../gen/meshmart/identity/v1/events_pb.js";
import { createPostgres } from "../src/data/postgres.js";
import { newEvent, type OutboundEvent, writeEvents } from "../src/events/outbox.js";
import type { OutboxRelayOptions } from "../src/events/relay.js";
import { ensureStreams } from "../src/events/streams.js";
import {
  deferred,
  type EventsFixture,
  fixtureRelay,
  metricValue,
  openEventsFixture,
  readStream,
  resetOutbox,
  silentLogger,
  testStreamSettings,
  waitFor,
  writeOutbox,
} from "./events-support.js";

let fx: EventsFixture;
before(async () => {
  fx = await openEventsFixture("kit_events_relay", ["catalog"]);
});
after(() => fx.close());

const created = (productId: string): OutboundEvent => newEvent(ProductCreatedSchema, { productId });

const write = (...events: OutboundEvent[]) => writeOutbox(fx, ...events);

const relay = (overrides: Partial<OutboxRelayOptions> = {}) => fixtureRelay(fx, overrides);

/** Clears the outbox and the catalog stream between tests. */
const reset = () => resetOutbox(fx, "catalog");

const catalogStream = () => readStream(fx.jsm, fx.names.stream("catalog"));

/** Waits for `event` in the stream and fails if it took `ms` or more from now. */
async function publishedWithin(event: OutboundEvent, ms: number): Promise<void> {
  const started = Date.now();
  await waitFor("the event in the stream", async () =>
    (await catalogStream()).some((m) => m.header.get("Nats-Msg-Id") === event.eventId),
  );
  assert.ok(Date.now() - started < ms, `published after ${Date.now() - started} ms`);
}

describe("outbox relay", () => {
  test("publishes committed rows in seq order, with their headers, and stamps them", async () => {
    await reset();
    const first = [created("p1"), created("p2"), created("p3")];
    const second = [newEvent(ProductDeletedSchema, { productId: "p1", version: 2n })];
    await write(...first);
    await write(...second);

    assert.equal(await relay().flush(), 4);

    const stored = await catalogStream();
    const expected = [...first, ...second];
    assert.deepEqual(
      stored.map((m) => m.header.get("Nats-Msg-Id")),
      expected.map((e) => e.eventId),
    );
    assert.deepEqual(
      stored.map((m) => m.subject),
      expected.map((e) => fx.names.subjectOf(e.schema)),
    );
    const [head] = stored;
    assert.ok(head);
    assert.equal(head.header.get("Content-Type"), "application/x-protobuf");
    assert.equal(head.header.get("Meshmart-Event-Type"), "meshmart.catalog.v1.ProductCreated");
    assert.equal(fromBinary(ProductCreatedSchema, head.data).productId, "p1");
    const [row] = await fx.sql<{ unpublished: string }[]>`
      select count(*) filter (where published_at is null)::text as unpublished from event_outbox`;
    assert.equal(row?.unpublished, "0");
  });

  test("an event written twice, or published twice, is stored once", async () => {
    await reset();
    const event = created("twice");
    await write(event);
    await write(event); // the outbox keys on event_id
    const r = relay();
    assert.equal(await r.flush(), 1);
    // A crash between the publish and the stamp: the next relay publishes the row again.
    await fx.sql`update event_outbox set published_at = null`;
    await write(created("after"));
    assert.equal(await relay().flush(), 2);
    const stored = await catalogStream();
    assert.deepEqual(
      stored.map((m) => fromBinary(ProductCreatedSchema, m.data).productId),
      ["twice", "after"],
    );
  });

  test("a row whose lower seq commits late is still published", async () => {
    await reset();
    const late = created("late");
    const early = created("early");
    const held = deferred();
    const wroteLate = deferred();
    // Takes its seq first, commits last.
    const lateTx = fx.sql.begin(async (tx) => {
      await writeEvents(tx, fx.names, [late]);
      wroteLate.resolve();
      await held.promise;
    });
    await wroteLate.promise;
    await write(early);
    const r = relay();
    assert.equal(await r.flush(), 1);
    held.resolve();
    await lateTx;
    assert.equal(await r.flush(), 1);
    const ids = (await catalogStream()).map((m) => m.header.get("Nats-Msg-Id"));
    assert.deepEqual(ids, [early.eventId, late.eventId]);
  });

  test("wakes on the insert notification, not only on its poll", async () => {
    await reset();
    const r = relay({ pollIntervalMs: 60_000 });
    r.start();
    try {
      // Let the first (empty) round finish and the relay settle into its long poll.
      await new Promise((resolve) => setTimeout(resolve, 300));
      const event = created("notified");
      const started = Date.now();
      await write(event);
      await waitFor("the notified event in the stream", async () =>
        (await catalogStream()).some((m) => m.header.get("Nats-Msg-Id") === event.eventId),
      );
      assert.ok(Date.now() - started < 5_000);
    } finally {
      await r.stop();
    }
  });

  test("retries while JetStream refuses a row and never skips it or reorders around it", async () => {
    await reset();
    // identity's stream does not exist yet: publishing there fails until it does.
    const blocked = newEvent(UserSignedUpSchema, { userId: "u1", email: "u1@example.com" });
    const behind = created("behind");
    await write(blocked);
    await write(behind);
    const registry = new Registry();
    const r = relay({ registry, pollIntervalMs: 50, maxBackoffMs: 100, publishTimeoutMs: 1_000 });
    r.start();
    try {
      await waitFor("publish errors", async () =>
        (await metricValue(registry, "outbox_publish_errors_total")) >= 2 ? true : undefined,
      );
      const [pending] = await fx.sql<{ n: string }[]>`
        select count(*)::text as n from event_outbox where published_at is null`;
      assert.equal(pending?.n, "2", "nothing after the failing row is stamped");

      await ensureStreams(fx.jsm, fx.names, ["identity"], testStreamSettings);
      await waitFor("both rows published", async () => {
        const [row] = await fx.sql<{ n: string }[]>`
          select count(*)::text as n from event_outbox where published_at is null`;
        return row?.n === "0";
      });
      const identity = await readStream(fx.jsm, fx.names.stream("identity"));
      assert.deepEqual(
        identity.map((m) => m.header.get("Nats-Msg-Id")),
        [blocked.eventId],
      );
      // Published ahead while the first row failed, then again: deduped to one.
      const catalog = await catalogStream();
      assert.deepEqual(
        catalog.map((m) => m.header.get("Nats-Msg-Id")),
        [behind.eventId],
      );
    } finally {
      await r.stop();
      await fx.jsm.streams.delete(fx.names.stream("identity"));
    }
  });

  test("two relays on one database publish each row once, in seq order", async () => {
    await reset();
    const registries = [new Registry(), new Registry()];
    const relays = registries.map((registry) =>
      relay({ registry, pollIntervalMs: 20, batchSize: 7 }),
    );
    for (const r of relays) r.start();
    try {
      const events: OutboundEvent[] = [];
      for (let i = 0; i < 10; i++) {
        const batch = Array.from({ length: 5 }, (_, j) => created(`p${i * 5 + j}`));
        events.push(...batch);
        await write(...batch);
      }
      await waitFor("all 50 events in the stream", async () =>
        (await catalogStream()).length === 50 ? true : undefined,
      );
      const stored = await catalogStream();
      assert.deepEqual(
        stored.map((m) => m.header.get("Nats-Msg-Id")),
        events.map((e) => e.eventId),
      );
      const publishedCounts = await Promise.all(
        registries.map((reg) => metricValue(reg, "outbox_published_total")),
      );
      assert.equal(
        publishedCounts.reduce((a, b) => a + b, 0),
        50,
        `each row published by exactly one relay (${publishedCounts.join(" + ")})`,
      );
    } finally {
      await Promise.all(relays.map((r) => r.stop()));
    }
  });

  test("reports pending rows and the age of the oldest", async () => {
    await reset();
    const registry = new Registry();
    const r = relay({ registry });
    await write(created("m1"), created("m2"));
    await fx.sql`update event_outbox set created_at = now() - interval '42 seconds'`;
    assert.equal(await metricValue(registry, "outbox_pending"), 2);
    const lag = await metricValue(registry, "outbox_lag_seconds");
    assert.ok(lag >= 42 && lag < 60, `lag ${lag}`);
    await new Promise((resolve) => setTimeout(resolve, 600)); // past the stats cache
    await r.flush();
    assert.equal(await metricValue(registry, "outbox_pending"), 0);
    assert.equal(await metricValue(registry, "outbox_lag_seconds"), 0);
    assert.equal(await metricValue(registry, "outbox_published_total"), 2);
  });

  test("deletes published rows past their retention", async () => {
    await reset();
    await write(created("old"), created("recent"));
    const r = relay({ retentionMs: 60_000, pollIntervalMs: 20 });
    await r.flush();
    await fx.sql`
      update event_outbox set published_at = now() - interval '2 minutes'
      where event_id = (select event_id from event_outbox order by seq limit 1)`;
    r.start();
    try {
      await waitFor("the old row deleted", async () => {
        const rows = await fx.sql<{ n: string }[]>`select count(*)::text as n from event_outbox`;
        return rows[0]?.n === "1";
      });
    } finally {
      await r.stop();
    }
  });

  test("a row committed while the LISTEN is still being set up is published when it is, not at the next poll", async () => {
    await reset();
    const proxy = await startProxy(new URL(fx.databaseUrl));
    const url = new URL(fx.databaseUrl);
    url.port = String(proxy.port);
    // One pooled connection, opened now: the relay's queries run on it while its LISTEN
    // connection (a new one) is held at the proxy.
    const sql = createPostgres({
      url: url.href,
      service: "events-test",
      logger: silentLogger,
      max: 1,
    });
    await sql`select 1`;
    const r = relay({ sql, pollIntervalMs: 60_000, listenCheckMs: 60_000 });
    try {
      proxy.holdNewConnections();
      r.start();
      // The first (empty) round has run; the LISTEN has not reached Postgres.
      await new Promise((resolve) => setTimeout(resolve, 300));
      const event = created("before-listen");
      await write(event);
      proxy.releaseHeld();
      // Without a poll at LISTEN time it would wait for the 60 s fallback poll.
      await publishedWithin(event, 3_000);
    } finally {
      await r.stop();
      await sql.end({ timeout: 1 });
      await proxy.close();
    }
  });

  test("a LISTEN check stuck on a connection that never answers does not hold up publishing", async () => {
    await reset();
    const proxy = await startProxy(new URL(fx.databaseUrl));
    const url = new URL(fx.databaseUrl);
    url.port = String(proxy.port);
    const sql = createPostgres({ url: url.href, service: "events-test", logger: silentLogger });
    const r = relay({ sql, pollIntervalMs: 50, listenCheckMs: 100 });
    try {
      r.start();
      const listens = () => fx.sql<{ pid: number }[]>`
        select pid from pg_stat_activity
        where datname = current_database() and query ilike 'listen %'`;
      await waitFor("the relay's LISTEN", async () => (await listens()).length > 0);
      // From now on a new connection gets in but never hears back; then the LISTEN's dies.
      proxy.freezeNewConnections();
      await fx.sql`select pg_terminate_backend(pid) from pg_stat_activity
        where datname = current_database() and query ilike 'listen %'`;
      await new Promise((resolve) => setTimeout(resolve, 300));
      const event = created("past-a-stuck-check");
      await write(event);
      // Polling published it; a loop waiting on the check would wait out the connect timeout.
      await publishedWithin(event, 3_000);
    } finally {
      await r.stop();
      await sql.end({ timeout: 1 });
      await proxy.close();
    }
  });
});

/**
 * A TCP proxy to Postgres whose new connections can be frozen (accepted, never answered)
 * or held (accepted, connected upstream only when released).
 */
async function startProxy(target: URL) {
  let frozen = false;
  let holding = false;
  const held: Socket[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    sockets.add(client);
    client.on("close", () => sockets.delete(client));
    client.on("error", () => {});
    if (frozen) return;
    if (holding) {
      held.push(client);
      return;
    }
    forward(client);
  });
  const forward = (client: Socket) => {
    const upstream = tcpConnect(Number(target.port || 5432), target.hostname);
    sockets.add(upstream);
    upstream.on("close", () => sockets.delete(upstream));
    upstream.on("error", () => client.destroy());
    client.on("error", () => upstream.destroy());
    client.pipe(upstream).pipe(client);
  };
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  return {
    port: typeof address === "object" && address !== null ? address.port : 0,
    freezeNewConnections() {
      frozen = true;
    },
    holdNewConnections() {
      holding = true;
    },
    releaseHeld() {
      holding = false;
      for (const client of held.splice(0)) forward(client);
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
