import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { nanos } from "@nats-io/transport-node";
import { ProductCreatedSchema } from "../gen/meshmart/catalog/v1/events_pb.js";
import { UserSignedUpSchema } from "../gen/meshmart/identity/v1/events_pb.js";
import { ConfigError, kitConfigSchema, loadConfig } from "../src/config.js";
import { eventConfigFields } from "../src/events/config.js";
import { onEvent } from "../src/events/consumer.js";
import { newEvent, writeEvents } from "../src/events/outbox.js";
import { openServiceEvents } from "../src/events/service-events.js";
import { ensureStreams } from "../src/events/streams.js";
import { createRuntime } from "../src/runtime.js";
import { createLogSink } from "../src/testing/index.js";
import {
  type EventsFixture,
  openEventsFixture,
  publishEvent,
  testStreamSettings,
  waitFor,
} from "./events-support.js";

const schema = kitConfigSchema.extend({ ...eventConfigFields });
const baseEnv = {
  SERVICE_NAME: "events-test",
  GRPC_PORT: "0",
  HTTP_PORT: "0",
  ADMIN_PORT: "0",
  NATS_URL: "nats://127.0.0.1:4222",
};

describe("eventConfigFields", () => {
  test("defaults", () => {
    const config = loadConfig(schema, baseEnv);
    assert.equal(config.EVENTS_NAMESPACE, "meshmart");
    assert.equal(config.STREAM_REPLICAS, 1);
    assert.equal(config.STREAM_MAX_AGE_MS, 7 * 24 * 3_600_000);
    assert.equal(config.STREAM_DUPLICATE_WINDOW_MS, 120_000);
    assert.equal(config.OUTBOX_BATCH_SIZE, 256);
    assert.equal(config.CONSUMER_MAX_DELIVER, 5);
  });

  test("accepts a cluster's seed list and credentials", () => {
    const url = "nats://a.nats:4222, nats://user:pw@b.nats:4222";
    assert.equal(loadConfig(schema, { ...baseEnv, NATS_URL: url }).NATS_URL, url);
  });

  test("rejects a missing or non-NATS URL, a bad namespace, out-of-range replicas", () => {
    const { NATS_URL: _, ...withoutNats } = baseEnv;
    assert.throws(() => loadConfig(schema, withoutNats), /NATS_URL/);
    for (const [key, value] of [
      ["NATS_URL", "http://127.0.0.1:4222"],
      ["EVENTS_NAMESPACE", "Meshmart-Prod"],
      ["EVENTS_NAMESPACE", "a.b"],
      ["STREAM_REPLICAS", "7"],
      ["CONSUMER_MAX_DELIVER", "0"],
    ] as const) {
      assert.throws(
        () => loadConfig(schema, { ...baseEnv, [key]: value }),
        (error: unknown) => error instanceof ConfigError && error.message.includes(key),
        `${key}=${value}`,
      );
    }
  });
});

describe("openServiceEvents", () => {
  let fx: EventsFixture;
  before(async () => {
    // Only the database and namespace are borrowed: the service opens its own NATS connection.
    fx = await openEventsFixture("kit_events_service", []);
    await fx.sql`create table greeted (user_id text primary key)`;
  });
  after(() => fx.close());

  const configFor = (extra: Record<string, string> = {}) =>
    loadConfig(schema, {
      ...baseEnv,
      NATS_URL: fx.natsUrl,
      EVENTS_NAMESPACE: fx.names.namespace,
      LOG_LEVEL: "info",
      ...extra,
    });

  test("publishes through the relay, consumes, and closes in order", async () => {
    const config = configFor({ STREAM_MAX_AGE_MS: "3600000" });
    const logs = createLogSink();
    const runtime = await createRuntime(config, { logDestination: logs.stream });
    const events = await openServiceEvents(runtime, {
      sql: fx.sql,
      config,
      publishes: ["catalog"],
    });
    try {
      const catalog = await fx.jsm.streams.info(fx.names.stream("catalog"));
      assert.equal(catalog.config.max_age, nanos(3_600_000));
      assert.equal(catalog.config.duplicate_window, nanos(120_000));
      assert.deepEqual(catalog.config.subjects, [`${fx.names.namespace}.catalog.>`]);
      assert.equal(catalog.config.storage, "file");
      const dead = await fx.jsm.streams.info(fx.names.deadLetterStream);
      assert.deepEqual(dead.config.subjects, [`${fx.names.namespace}.deadletter.>`]);

      const [check, ...others] = events.checks;
      assert.equal(others.length, 0);
      assert.equal(check?.critical, false);
      await check?.probe(AbortSignal.timeout(1_000));

      // identity's stream does not exist yet: consuming creates it.
      await events.consume({
        durable: "greeter",
        domains: ["identity"],
        handlers: [
          onEvent(UserSignedUpSchema, async (tx, event) => {
            await tx`insert into greeted values (${event.userId})`;
          }),
        ],
      });
      const identity = await fx.jsm.streams.info(fx.names.stream("identity"));
      assert.equal(identity.config.max_age, nanos(3_600_000));
      await publishEvent(fx, UserSignedUpSchema, { userId: "u1", email: "u1@example.com" });
      await waitFor("the user greeted", async () =>
        (await fx.sql`select 1 from greeted where user_id = 'u1'`).length === 1 ? true : undefined,
      );

      events.startRelay();
      events.startRelay(); // idempotent
      const event = newEvent(ProductCreatedSchema, { productId: "p1" });
      await fx.sql.begin((tx) => writeEvents(tx, fx.names, [event]));
      await waitFor("the event relayed", async () => {
        const msg = await fx.jsm.streams.getMessage(fx.names.stream("catalog"), {
          last_by_subj: fx.names.subjectOf(ProductCreatedSchema),
        });
        return msg?.header.get("Nats-Msg-Id") === event.eventId ? true : undefined;
      });

      const metrics = await runtime.registry.metrics();
      for (const name of [
        "outbox_published_total",
        "outbox_pending",
        "outbox_lag_seconds",
        "outbox_publish_errors_total",
        "events_consumed_total",
        "events_dead_lettered_total",
        "consumer_pending",
      ]) {
        assert.match(metrics, new RegExp(`^# TYPE ${name} `, "m"), name);
      }
    } finally {
      await events.close();
    }
    assert.equal(events.nc.isClosed(), true);
    await events.close(); // idempotent
    await assert.rejects(events.checks[0]?.probe(AbortSignal.timeout(1_000)) ?? Promise.resolve());
    assert.match(logs.text(), /outbox relay started/);
    assert.match(logs.text(), /event consumer started/);
  });

  test("every start brings the publisher's streams in line; consumers never change them", async () => {
    const jsmStream = () => fx.jsm.streams.info(fx.names.stream("catalog"));
    const config = configFor({ STREAM_MAX_AGE_MS: "7200000", STREAM_DUPLICATE_WINDOW_MS: "60000" });
    const runtime = await createRuntime(config, { logDestination: createLogSink().stream });
    const events = await openServiceEvents(runtime, {
      sql: fx.sql,
      config,
      publishes: ["catalog"],
    });
    await events.close();
    let info = await jsmStream();
    assert.equal(info.config.max_age, nanos(7_200_000));
    assert.equal(info.config.duplicate_window, nanos(60_000));

    // A consumer's view of the settings differs: the stream stays as its publisher set it.
    await ensureStreams(fx.jsm, fx.names, ["catalog"], {
      ...testStreamSettings,
      updateExisting: false,
    });
    info = await jsmStream();
    assert.equal(info.config.max_age, nanos(7_200_000));
  });

  test("a start that cannot reach NATS fails with the address, never the password", async () => {
    const config = configFor({ NATS_URL: "nats://svc:hunter2@127.0.0.1:1" });
    const runtime = await createRuntime(config, { logDestination: createLogSink().stream });
    await assert.rejects(
      openServiceEvents(runtime, { sql: fx.sql, config, publishes: ["catalog"] }),
      (error: Error) => {
        assert.match(error.message, /cannot connect to NATS at nats:\/\/127\.0\.0\.1:1/);
        assert.doesNotMatch(error.message, /hunter2/);
        return true;
      },
    );
  });
});
