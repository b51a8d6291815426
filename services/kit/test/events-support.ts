/**
 * Shared setup of the events-*.test.ts files: a fresh database with the event tables, a
 * NATS connection, a namespace of their own (streams deleted afterwards), and helpers to
 * publish and read raw stream messages.
 */
import type { DescMessage, MessageInitShape } from "@bufbuild/protobuf";
import {
  type JetStreamClient,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
} from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import type { Sql } from "postgres";
import { Registry } from "prom-client";
import { createPostgres } from "../src/data/postgres.js";
import { createEventNames, type EventDomain, type EventNames } from "../src/events/names.js";
import { migrateEventTables, type OutboundEvent, writeEvents } from "../src/events/outbox.js";
import {
  createOutboxRelay,
  type OutboxRelay,
  type OutboxRelayOptions,
} from "../src/events/relay.js";
import { ensureStreams, type StreamSettings } from "../src/events/streams.js";
import {
  deleteNamespaceStreams,
  publishLikeRelay,
  type TestPublishOptions,
} from "../src/testing/events.js";
import {
  createTestDatabase,
  type ManagedChild,
  natsInfo,
  spawnManaged,
  testNatsUrl,
  uniqueName,
} from "../src/testing/index.js";

export const silentLogger = pino({ level: "silent" });

export const testStreamSettings: StreamSettings = {
  replicas: 1,
  maxAgeMs: 3_600_000,
  duplicateWindowMs: 120_000,
};

/** Everything one test file needs; `close()` drops the database and deletes the streams. */
export interface EventsFixture {
  sql: Sql;
  databaseUrl: string;
  nc: NatsConnection;
  natsUrl: string;
  js: JetStreamClient;
  jsm: JetStreamManager;
  names: EventNames;
  registry: Registry;
  close(): Promise<void>;
}

/** A database with the event tables, a NATS connection and a fresh namespace. */
export async function openEventsFixture(
  prefix: string,
  domains: EventDomain[],
): Promise<EventsFixture> {
  const db = await createTestDatabase(prefix);
  const sql = createPostgres({ url: db.url, service: "events-test", logger: silentLogger });
  await migrateEventTables(sql, silentLogger);
  const natsUrl = await testNatsUrl();
  const nc = await connect({ servers: natsUrl });
  const jsm = await jetstreamManager(nc);
  const names = createEventNames(uniqueName("ev").slice(0, 32));
  await ensureStreams(jsm, names, domains, testStreamSettings);
  return {
    sql,
    databaseUrl: db.url,
    nc,
    natsUrl,
    js: jetstream(nc),
    jsm,
    names,
    registry: new Registry(),
    async close() {
      await deleteNamespaceStreams(jsm, names);
      await nc.close();
      await sql.end({ timeout: 1 });
      await db.drop();
    },
  };
}

export { deleteNamespaceStreams, readStream } from "../src/testing/events.js";

/** Options for {@link publishEvent}. */
export type PublishEventOptions = TestPublishOptions;

/**
 * Publishes an event the way the relay does (headers included), bypassing the outbox,
 * and returns its event id.
 */
export function publishEvent<Desc extends DescMessage>(
  fixture: Pick<EventsFixture, "js" | "names">,
  schema: Desc,
  init: MessageInitShape<Desc>,
  options: PublishEventOptions = {},
): Promise<string> {
  return publishLikeRelay(fixture.js, fixture.names, schema, init, options);
}

export { waitFor } from "../src/testing/events.js";

/** The value of a counter or gauge with these labels (0 when absent). */
export async function metricValue(
  registry: Registry,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const metric = registry.getSingleMetric(name);
  if (metric === undefined) return 0;
  const { values } = await metric.get();
  let sum = 0;
  for (const v of values) {
    const l = v.labels as Record<string, string | number>;
    if (Object.entries(labels).every(([k, want]) => String(l[k]) === want)) sum += v.value;
  }
  return sum;
}

/**
 * A nats-server of a test's own (JetStream on `port`, its store in `storeDir`), for tests
 * that stop and restart NATS; resolves once JetStream answers.
 */
export async function startTestNats(
  command: string,
  port: number,
  storeDir: string,
  name: string,
): Promise<ManagedChild> {
  const server = spawnManaged({
    name,
    command,
    args: ["-js", "-a", "127.0.0.1", "-p", String(port), "-sd", storeDir],
    stopSignal: "SIGTERM",
    stopTimeoutMs: 10_000,
  });
  await server.waitUntil(
    async () => (await natsInfo("127.0.0.1", port, 300))?.jetstream === true,
    20_000,
  );
  return server;
}

/** A promise and the function that resolves it (Promise.withResolvers arrives in Node 22). */
export function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve: () => void = () => {};
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** Empties the fixture's outbox and the domain's stream, so a test starts from nothing. */
export async function resetOutbox(fx: EventsFixture, domain: EventDomain): Promise<void> {
  await fx.sql`delete from event_outbox`;
  await fx.jsm.streams.purge(fx.names.stream(domain));
}

/** An outbox relay on the fixture's database and NATS, silent, on a registry of its own. */
export function fixtureRelay(
  fx: EventsFixture,
  overrides: Partial<OutboxRelayOptions> = {},
): OutboxRelay {
  return createOutboxRelay({
    sql: fx.sql,
    nc: fx.nc,
    names: fx.names,
    logger: silentLogger,
    registry: new Registry(),
    ...overrides,
  });
}

/** Commits `events` to the fixture's outbox in one transaction. */
export async function writeOutbox(fx: EventsFixture, ...events: OutboundEvent[]): Promise<void> {
  await fx.sql.begin((tx) => writeEvents(tx, fx.names, events));
}
