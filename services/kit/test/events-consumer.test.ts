import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import { context, propagation, ROOT_CONTEXT, TraceFlags, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { Registry } from "prom-client";
import {
  ProductCreatedSchema,
  ProductDeletedSchema,
  ProductUpdatedSchema,
} from "../gen/meshmart/catalog/v1/events_pb.js";
import { UserSignedUpSchema } from "../gen/meshmart/identity/v1/events_pb.js";
import {
  createEventConsumer,
  type EventConsumer,
  type EventConsumerOptions,
  type EventHandler,
  type EventMeta,
  onEvent,
} from "../src/events/consumer.js";
import { listDeadLetters } from "../src/events/dead-letters.js";
import { newEvent, writeEvents } from "../src/events/outbox.js";
import { createOutboxRelay } from "../src/events/relay.js";
import { uniqueName } from "../src/testing/index.js";
import {
  type EventsFixture,
  metricValue,
  openEventsFixture,
  publishEvent,
  silentLogger,
  waitFor,
} from "./events-support.js";

let fx: EventsFixture;
before(async () => {
  fx = await openEventsFixture("kit_events_consumer", ["catalog", "identity"]);
  await fx.sql`
    create table handled (
      consumer text not null,
      event_id uuid not null,
      product_id text not null
    )`;
});
after(() => fx.close());

interface Started {
  consumer: EventConsumer;
  durable: string;
  registry: Registry;
}

// Each test's consumers stop after it, and its messages go: a new durable starts at the
// beginning of the stream and would otherwise see the earlier tests' events.
const running: EventConsumer[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((c) => c.stop()));
  await fx.jsm.streams.purge(fx.names.stream("catalog"));
  await fx.jsm.streams.purge(fx.names.deadLetterStream);
});

async function startConsumer(
  handlers: EventHandler[],
  overrides: Partial<EventConsumerOptions> = {},
): Promise<Started> {
  const durable = overrides.durable ?? uniqueName("c");
  const registry = overrides.registry ?? new Registry();
  const consumer = createEventConsumer({
    sql: fx.sql,
    nc: fx.nc,
    names: fx.names,
    durable,
    domains: ["catalog"],
    handlers,
    maxDeliver: 3,
    backoffMs: [50, 100],
    logger: silentLogger,
    registry,
    ...overrides,
  });
  running.push(consumer);
  await consumer.start();
  return { consumer, durable, registry };
}

/** A handler for ProductCreated that records the product in `handled`, in the inbox tx. */
function recordCreated(
  durable: () => string,
  behaviour: (productId: string, meta: EventMeta) => void | Promise<void> = () => {},
): EventHandler {
  return onEvent(ProductCreatedSchema, async (tx, event, meta) => {
    await tx`
      insert into handled (consumer, event_id, product_id)
      values (${durable()}, ${meta.eventId}, ${event.productId})`;
    await behaviour(event.productId, meta);
  });
}

async function handledProducts(durable: string): Promise<string[]> {
  const rows = await fx.sql<{ product_id: string }[]>`
    select product_id from handled where consumer = ${durable} order by product_id`;
  return rows.map((r) => r.product_id);
}

const outcome = (s: Started, value: string) =>
  metricValue(s.registry, "events_consumed_total", { consumer: s.durable, outcome: value });

describe("event consumer", () => {
  test("handles an event once even when it is delivered twice", async () => {
    let durable = "";
    const s = await startConsumer([recordCreated(() => durable)]);
    durable = s.durable;
    const eventId = await publishEvent(fx, ProductCreatedSchema, { productId: "once" });
    // The same event again under another Nats-Msg-Id: JetStream stores it twice.
    const again = await publishEvent(fx, ProductCreatedSchema, { productId: "once", eventId }, {});
    assert.equal(again, eventId);
    await waitFor("the duplicate skipped", async () =>
      (await outcome(s, "duplicate")) === 1 ? true : undefined,
    );
    assert.deepEqual(await handledProducts(durable), ["once"]);
    assert.equal(await outcome(s, "processed"), 1);
  });

  test("retries a failing handler, then dead-letters it with the reason; later events flow", async () => {
    let durable = "";
    const attempts: number[] = [];
    const s = await startConsumer([
      recordCreated(
        () => durable,
        (productId, meta) => {
          if (productId !== "bad") return;
          attempts.push(meta.deliveryCount);
          throw new Error("price feed\nunavailable");
        },
      ),
    ]);
    durable = s.durable;
    const badId = await publishEvent(fx, ProductCreatedSchema, { productId: "bad" });
    await publishEvent(fx, ProductCreatedSchema, { productId: "good1" });
    await publishEvent(fx, ProductCreatedSchema, { productId: "good2" });

    await waitFor("the good events handled", async () =>
      (await handledProducts(durable)).length === 2 ? true : undefined,
    );
    await waitFor("the bad event dead-lettered", async () =>
      (await outcome(s, "dead_lettered")) === 1 ? true : undefined,
    );
    assert.deepEqual(attempts, [1, 2, 3]);
    // The failed attempts' writes rolled back with their inbox rows.
    assert.deepEqual(await handledProducts(durable), ["good1", "good2"]);
    const inbox = await fx.sql`
      select 1 from event_inbox where consumer = ${durable} and event_id = ${badId}`;
    assert.equal(inbox.length, 0);

    const [letter, ...more] = await listDeadLetters(fx.jsm, fx.names, { consumer: durable });
    assert.equal(more.length, 0);
    assert.ok(letter);
    assert.equal(letter.consumer, durable);
    assert.equal(letter.subject, fx.names.subjectOf(ProductCreatedSchema));
    assert.equal(letter.eventType, ProductCreatedSchema.typeName);
    assert.equal(letter.eventId, badId);
    assert.equal(letter.reason, "price feed unavailable");
    assert.equal(letter.deliveries, 3);
    assert.equal(letter.originalStream, fx.names.stream("catalog"));
    assert.ok(letter.originalSeq > 0);
    assert.equal(
      await metricValue(s.registry, "events_dead_lettered_total", { consumer: durable }),
      1,
    );
    // Not redelivered after being terminated.
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.deepEqual(attempts, [1, 2, 3]);
  });

  test("an event that fails, then succeeds, is handled once", async () => {
    let durable = "";
    const deliveries: number[] = [];
    const s = await startConsumer([
      recordCreated(
        () => durable,
        (_productId, meta) => {
          deliveries.push(meta.deliveryCount);
          if (meta.deliveryCount < 3) throw new Error("not yet");
        },
      ),
    ]);
    durable = s.durable;
    await publishEvent(fx, ProductCreatedSchema, { productId: "eventually" });
    await waitFor("processed", async () =>
      (await outcome(s, "processed")) === 1 ? true : undefined,
    );
    assert.deepEqual(deliveries, [1, 2, 3]);
    assert.deepEqual(await handledProducts(durable), ["eventually"]);
    assert.equal(await outcome(s, "dead_lettered"), 0);
  });

  test("poison messages go to dead letters at once, without blocking the next", async () => {
    let durable = "";
    const s = await startConsumer([
      recordCreated(() => durable),
      onEvent(ProductDeletedSchema, async () => {}),
    ]);
    durable = s.durable;
    // Not a protobuf ProductCreated.
    await publishEvent(
      fx,
      ProductCreatedSchema,
      { productId: "x" },
      { payload: new Uint8Array([0xff, 0xff, 0xff, 0xff]) },
    );
    // Claims a type nobody handles.
    await publishEvent(
      fx,
      ProductCreatedSchema,
      { productId: "y" },
      { eventType: "meshmart.catalog.v1.ProductRenamed" },
    );
    // A ProductDeleted on ProductCreated's subject.
    await publishEvent(
      fx,
      ProductCreatedSchema,
      { productId: "z" },
      { eventType: ProductDeletedSchema.typeName },
    );
    await publishEvent(fx, ProductCreatedSchema, { productId: "fine" });

    await waitFor("the good event handled", async () =>
      (await handledProducts(durable)).includes("fine") ? true : undefined,
    );
    const letters = await waitFor("three dead letters", async () => {
      const found = await listDeadLetters(fx.jsm, fx.names, { consumer: durable });
      return found.length === 3 ? found : undefined;
    });
    assert.ok(letters.every((l) => l.deliveries === 1));
    assert.match(letters[0]?.reason ?? "", /undecodable meshmart\.catalog\.v1\.ProductCreated/);
    assert.match(
      letters[1]?.reason ?? "",
      /unknown event type "meshmart\.catalog\.v1\.ProductRenamed"/,
    );
    assert.match(
      letters[2]?.reason ?? "",
      /unknown event type "meshmart\.catalog\.v1\.ProductDeleted"/,
    );
    assert.equal(await outcome(s, "retried"), 0);
  });

  test("reads only the subjects it handles", async () => {
    let durable = "";
    const s = await startConsumer([recordCreated(() => durable)]);
    durable = s.durable;
    await publishEvent(fx, ProductUpdatedSchema, { productId: "not-mine" });
    await publishEvent(fx, ProductCreatedSchema, { productId: "mine" });
    await waitFor("mine handled", async () =>
      (await handledProducts(durable)).includes("mine") ? true : undefined,
    );
    // Either filtered out by the server or acked as ignored; never dead-lettered.
    assert.equal(await outcome(s, "dead_lettered"), 0);
    assert.deepEqual(await handledProducts(durable), ["mine"]);
  });

  test("continues the trace of the request that wrote the event", async () => {
    propagation.setGlobalPropagator(new W3CTraceContextPropagator());
    const manager = new AsyncLocalStorageContextManager().enable();
    context.setGlobalContextManager(manager);
    try {
      const seen: { traceId?: string | undefined; traceparent?: string | undefined }[] = [];
      await startConsumer([
        onEvent(ProductCreatedSchema, async (_tx, _event, meta) => {
          seen.push({
            traceId: trace.getSpanContext(context.active())?.traceId,
            traceparent: meta.headers.traceparent,
          });
        }),
      ]);
      const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
      const request = trace.setSpanContext(ROOT_CONTEXT, {
        traceId,
        spanId: "00f067aa0ba902b7",
        traceFlags: TraceFlags.SAMPLED,
        isRemote: true,
      });
      await context.with(request, () =>
        fx.sql.begin((tx) =>
          writeEvents(tx, fx.names, [newEvent(ProductCreatedSchema, { productId: "traced" })]),
        ),
      );
      const relay = createOutboxRelay({
        sql: fx.sql,
        nc: fx.nc,
        names: fx.names,
        logger: silentLogger,
        registry: new Registry(),
      });
      assert.ok((await relay.flush()) >= 1);
      const [first] = await waitFor("the handler ran", () => (seen.length > 0 ? seen : undefined));
      assert.equal(first?.traceId, traceId);
      assert.match(first?.traceparent ?? "", new RegExp(`^00-${traceId}-`));
    } finally {
      context.disable();
      manager.disable();
    }
  });

  test("stop waits for the handler in flight, and the event is not handled again", async () => {
    let durable = "";
    let entered: () => void = () => {};
    const inHandler = new Promise<void>((resolve) => {
      entered = resolve;
    });
    let finished = false;
    const slow = recordCreated(
      () => durable,
      async () => {
        entered();
        await new Promise((resolve) => setTimeout(resolve, 400));
        finished = true;
      },
    );
    const first = await startConsumer([slow]);
    durable = first.durable;
    await publishEvent(fx, ProductCreatedSchema, { productId: "slow" });
    await inHandler;
    await first.consumer.stop();
    assert.equal(finished, true, "stop() returned before the handler finished");
    assert.equal(await outcome(first, "processed"), 1);

    // The same durable again: nothing left to deliver for it.
    const second = await startConsumer([recordCreated(() => durable)], { durable });
    await publishEvent(fx, ProductCreatedSchema, { productId: "next" });
    await waitFor("the next event handled", async () =>
      (await handledProducts(durable)).includes("next") ? true : undefined,
    );
    assert.equal(await outcome(second, "duplicate"), 0);
    assert.deepEqual(await handledProducts(durable), ["next", "slow"]);
  });

  test("recreates its durable consumer when NATS loses it", async () => {
    let durable = "";
    const s = await startConsumer([recordCreated(() => durable)]);
    durable = s.durable;
    await publishEvent(fx, ProductCreatedSchema, { productId: "before" });
    await waitFor("before handled", async () =>
      (await handledProducts(durable)).includes("before") ? true : undefined,
    );
    await fx.jsm.consumers.delete(fx.names.stream("catalog"), durable);
    await publishEvent(fx, ProductCreatedSchema, { productId: "after" });
    await waitFor(
      "after handled",
      async () => ((await handledProducts(durable)).includes("after") ? true : undefined),
      20_000,
    );
    // Recreated from the start of the stream: earlier events come again and are skipped.
    assert.equal((await handledProducts(durable)).filter((p) => p === "before").length, 1);
  });

  test("refuses handlers outside its domains and bad durable names", () => {
    const handler = onEvent(UserSignedUpSchema, async () => {});
    const base = {
      sql: fx.sql,
      nc: fx.nc,
      names: fx.names,
      handlers: [handler],
      maxDeliver: 3,
      logger: silentLogger,
      registry: new Registry(),
    };
    assert.throws(
      () => createEventConsumer({ ...base, durable: "ok", domains: ["catalog"] }),
      /needs domain "identity"/,
    );
    assert.throws(
      () => createEventConsumer({ ...base, durable: "bad.name", domains: ["identity"] }),
      /consumer name must match/,
    );
  });
});
