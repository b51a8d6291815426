/**
 * The relay's batch: seq order where text order differs, the relay lock held elsewhere, and
 * failing fast (then resuming) while its NATS connection is down, on a server of its own.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { Registry } from "prom-client";
import { ProductCreatedSchema } from "../gen/meshmart/catalog/v1/events_pb.js";
import { connectNats } from "../src/events/nats.js";
import { newEvent, type OutboundEvent } from "../src/events/outbox.js";
import type { OutboxRelayOptions } from "../src/events/relay.js";
import { ensureStreams } from "../src/events/streams.js";
import { findExecutable } from "../src/testing/apt.js";
import { freePort, type ManagedChild } from "../src/testing/index.js";
import {
  deferred,
  type EventsFixture,
  fixtureRelay,
  metricValue,
  openEventsFixture,
  readStream,
  resetOutbox,
  silentLogger,
  startTestNats,
  testStreamSettings,
  waitFor,
  writeOutbox,
} from "./events-support.js";

/** The relay's advisory lock key ("mmoutbox"). */
const RELAY_LOCK_KEY = 0x6d6d6f7574626f78n;

let fx: EventsFixture;
before(async () => {
  fx = await openEventsFixture("kit_events_relay_batches", ["catalog"]);
});
after(() => fx.close());

const created = (productId: string): OutboundEvent => newEvent(ProductCreatedSchema, { productId });

const relay = (overrides: Partial<OutboxRelayOptions> = {}) => fixtureRelay(fx, overrides);

const write = (...events: OutboundEvent[]) => writeOutbox(fx, ...events);

async function unpublished(): Promise<number> {
  const [row] = await fx.sql<{ n: string }[]>`
    select count(*)::text as n from event_outbox where published_at is null`;
  return Number(row?.n);
}

const catalogIds = async () =>
  (await readStream(fx.jsm, fx.names.stream("catalog"))).map((m) => m.header.get("Nats-Msg-Id"));

describe("outbox relay batches", () => {
  test("publishes in seq order where the seqs' text order differs (99, 100, 101)", async () => {
    await resetOutbox(fx, "catalog");
    await fx.sql`select setval(pg_get_serial_sequence('event_outbox', 'seq'), 98)`;
    const events = [created("s99"), created("s100"), created("s101")];
    for (const event of events) await write(event);
    // A batch of two: the first batch must hold 99 and 100, not the text-smallest 100 and 101.
    assert.equal(await relay({ batchSize: 2 }).flush(), 3);
    assert.deepEqual(
      await catalogIds(),
      events.map((e) => e.eventId),
    );
  });

  test("publishes nothing while another process holds the relay lock, then everything", async () => {
    await resetOutbox(fx, "catalog");
    const event = created("locked-out");
    await write(event);
    const { holder, release } = await holdRelayLock();
    const registry = new Registry();
    const r = relay({ registry, pollIntervalMs: 20 });
    r.start();
    try {
      await new Promise((resolve) => setTimeout(resolve, 400));
      assert.deepEqual(await catalogIds(), []);
      assert.equal(await unpublished(), 1);
      assert.equal(await metricValue(registry, "outbox_published_total"), 0);
      assert.equal(await metricValue(registry, "outbox_publish_errors_total"), 0);
      release();
      await holder;
      await waitFor("the row published", async () =>
        (await unpublished()) === 0 ? true : undefined,
      );
      assert.deepEqual(await catalogIds(), [event.eventId]);
    } finally {
      release();
      await r.stop();
    }
  });

  test("after a quiet spell a commit goes out at once; those right behind it gather into one batch", async () => {
    await resetOutbox(fx, "catalog");
    const registry = new Registry();
    // A long poll: only the commits' notifications wake it. A long gather window, so the
    // timings below have a wide margin.
    const gatherMs = 1_500;
    const r = relay({ registry, gatherMs, pollIntervalMs: 60_000 });
    r.start();
    try {
      await waitFor("the relay's first poll", async () =>
        (await metricValue(registry, "outbox_published_total")) === 0 ? true : undefined,
      );
      const first = created("g0");
      const sent = Date.now();
      await write(first);
      await waitFor("the first published", async () =>
        (await unpublished()) === 0 ? true : undefined,
      );
      assert.ok(Date.now() - sent < gatherMs, "the first commit after a quiet spell waited");
      assert.equal(await metricValue(registry, "outbox_batches_total"), 1);
      // Four commits 20 ms apart, within the window of that batch: without gathering the
      // first would wake a batch of its own.
      const events = [created("g1"), created("g2"), created("g3"), created("g4")];
      for (const event of events) {
        await write(event);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      await waitFor("all four published", async () =>
        (await unpublished()) === 0 ? true : undefined,
      );
      assert.equal(await metricValue(registry, "outbox_batches_total"), 2);
      assert.equal(await metricValue(registry, "outbox_published_total"), 5);
      assert.deepEqual(
        await catalogIds(),
        [first, ...events].map((e) => e.eventId),
      );
    } finally {
      await r.stop();
    }
  });

  test("flush() waits while another process holds the relay lock, then publishes", async () => {
    await resetOutbox(fx, "catalog");
    const event = created("flushed-after-lock");
    await write(event);
    const { holder, release } = await holdRelayLock();
    try {
      const flushed = relay().flush();
      await new Promise((resolve) => setTimeout(resolve, 300));
      release();
      await holder;
      // Busy is not empty: a flush that took the lock for an empty outbox would say 0.
      assert.equal(await flushed, 1);
      assert.deepEqual(await catalogIds(), [event.eventId]);
    } finally {
      release();
    }
  });
});

/** Holds the relay lock in a transaction of the test's own until `release()`. */
async function holdRelayLock(): Promise<{ holder: Promise<unknown>; release: () => void }> {
  const released = deferred();
  const locked = deferred();
  const holder = fx.sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(${RELAY_LOCK_KEY.toString()}::bigint)`;
    locked.resolve();
    await released.promise;
  });
  await locked.promise;
  return { holder, release: released.resolve };
}

const natsServer = await findExecutable("nats-server");

describe("outbox relay while NATS is down", {
  skip: natsServer === undefined && "no nats-server",
}, () => {
  let storeDir: string;
  let port: number;
  let server: ManagedChild | undefined;
  let nc: NatsConnection;

  const startNats = async () => {
    server = await startTestNats(
      natsServer ?? "nats-server",
      port,
      storeDir,
      "nats-server (relay test)",
    );
  };

  before(async () => {
    storeDir = await mkdtemp(join(tmpdir(), "meshmart-relay-nats-"));
    port = await freePort();
    await startNats();
    nc = await connectNats({ url: `nats://127.0.0.1:${port}`, name: "test", logger: silentLogger });
    await ensureStreams(await jetstreamManager(nc), fx.names, ["catalog"], testStreamSettings);
  });
  after(async () => {
    await nc?.close();
    await server?.stop();
    await rm(storeDir, { recursive: true, force: true });
  });

  test("fails a batch at once instead of waiting out the publish timeout, and resumes after", async () => {
    await fx.sql`delete from event_outbox`;
    const registry = new Registry();
    // A publish timeout far beyond the assertions: only knowing NATS is down fails in time.
    const r = relay({
      nc,
      registry,
      pollIntervalMs: 50,
      maxBackoffMs: 100,
      publishTimeoutMs: 60_000,
    });
    r.start();
    try {
      await write(created("before"));
      await waitFor("before published", async () =>
        (await unpublished()) === 0 ? true : undefined,
      );

      await server?.stop();
      await write(created("during"));
      const started = Date.now();
      await waitFor("the relay failing", async () =>
        (await metricValue(registry, "outbox_publish_errors_total")) > 0 ? true : undefined,
      );
      assert.ok(Date.now() - started < 5_000, `failed after ${Date.now() - started} ms`);
      assert.equal(await unpublished(), 1);

      await startNats();
      await waitFor(
        "during published after the restart",
        async () => ((await unpublished()) === 0 ? true : undefined),
        20_000,
      );
      const js = await jetstreamManager(nc);
      const stream = await js.streams.info(fx.names.stream("catalog"));
      assert.equal(stream.state.messages, 2);
    } finally {
      await r.stop();
    }
  });
});
