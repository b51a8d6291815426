/**
 * The events benchmark (`npm run bench:events`): what the kit's event path (transactional
 * outbox → relay → JetStream → idempotent consumer with its inbox) delivers, against raw
 * JetStream as the ceiling, in one run, on one machine, one process:
 *
 *   raw  publish N small protobuf messages to a fresh stream (pipelined acks, as the relay
 *        does), then consume them with a durable pull consumer, explicit ack; then both at
 *        once (end to end).
 *   kit  write N events with writeEvents into an outbox (a fresh test database), run
 *        createOutboxRelay until JetStream has them all, then createEventConsumer with a
 *        handler that does nothing (the inbox insert is the work) until all are acked;
 *        then write, relay and consume at once (end to end).
 *
 * Prints msgs/s per stage and the ratios kit/raw; writes bench/results/events-<ts>.json.
 * Streams and the database are deleted at the end. See bench/events/README.md.
 */
import { availableParallelism, cpus } from "node:os";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  createEventConsumer,
  createEventNames,
  createLogger,
  createOutboxRelay,
  createPostgres,
  EventHeaders,
  ensureStreams,
  migrateEventTables,
  newEvent,
  type OutboundEvent,
  onEvent,
  PROTOBUF_CONTENT_TYPE,
  type Sql,
  writeEvents,
} from "@meshmart/kit";
import { StockLevelChangedSchema } from "@meshmart/kit/gen/meshmart/inventory/v1/events_pb.js";
import { createTestDatabase, testNatsUrl, uniqueName } from "@meshmart/kit/testing";
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  type JetStreamClient,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
} from "@nats-io/jetstream";
import { connect, headers, nanos } from "@nats-io/transport-node";
import { Registry } from "prom-client";
import { checkMachineQuiet, MachineMonitor } from "../catalog/proc.js";
import { intEnv } from "../lib/env.js";
import { printProblems, printWarnings, writeResults } from "../lib/report.js";
import { runBenchmark } from "../lib/run-benchmark.js";
import { sleep, stats } from "../lib/stats.js";
import { startInfraCpu } from "../orders/cpu.js";

const NOISE_CORES = 0.1;
const POLL_MS = 10;

const messages = intEnv("BENCH_MESSAGES", 20_000);
const settings = {
  messages,
  /** Messages of the end-to-end stages (writing, relaying and consuming at once). */
  e2eMessages: intEnv("BENCH_E2E_MESSAGES", Math.max(1, Math.round(messages / 4))),
  /** Events per outbox transaction (writeEvents call). */
  txBatch: intEnv("BENCH_TX_BATCH", 100),
  /** The relay's batch (OUTBOX_BATCH_SIZE, default 256); raw publishes in windows of as many. */
  relayBatch: intEnv("BENCH_RELAY_BATCH", 256),
  /** The kit consumer's concurrency (1, what services use: stream order kept). */
  consumerConcurrency: intEnv("BENCH_CONSUMER_CONCURRENCY", 1),
  /** Messages each path handles before anything is measured (JIT, connections, caches). */
  warmupMessages: intEnv(
    "BENCH_WARMUP_MESSAGES",
    Math.min(2_000, Math.max(100, Math.round(messages / 10))),
    1,
  ),
};
const say = (line = ""): void => {
  process.stdout.write(`${line}\n`);
};
const warnings: string[] = [];
const problems: string[] = [];
const cleanups: (() => Promise<unknown>)[] = [];

/** One stage's figures. */
interface Stage {
  messages: number;
  seconds: number;
  perSecond: number;
  /** CPU of this process, Postgres and NATS over the stage, µs per message. */
  cpuUsPerMessage: Record<string, number>;
  othersCores: number;
  latencyMs?: { p50: number; p99: number; max: number };
}

async function main(): Promise<void> {
  const started = new Date();
  say(`meshmart events benchmark: ${started.toISOString()}`);
  say(`node ${process.version}, ${cpus()[0]?.model ?? "?"} x${availableParallelism()}`);
  say(
    `${settings.messages} messages per stage (${settings.e2eMessages} end to end, ${settings.warmupMessages} warm-up per path); outbox transactions of ${settings.txBatch}, ` +
      `relay batch ${settings.relayBatch}, kit consumer concurrency ${settings.consumerConcurrency}`,
  );
  const busy = await checkMachineQuiet(say, warnings);

  const logger = createLogger({ service: "bench-events", level: "warn" });
  const namespace = uniqueName("bev");
  const names = createEventNames(namespace);
  const warmNames = createEventNames(`${namespace}_w`);
  const streamPrefix = `${namespace.toUpperCase()}_`;
  const natsUrl = await testNatsUrl();
  const nc = await connect({ servers: natsUrl, name: "bench-events" });
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  cleanups.push(async () => {
    for await (const name of jsm.streams.names()) {
      if (name.startsWith(streamPrefix)) await jsm.streams.delete(name);
    }
    await nc.close();
  });
  const db = await createTestDatabase("bench_events");
  cleanups.push(() => db.drop());
  const sql = createPostgres({ url: db.url, service: "bench-events", logger });
  cleanups.push(() => sql.end({ timeout: 1 }));
  await migrateEventTables(sql, logger);
  say(`namespace ${namespace}, nats ${natsUrl}, database ${db.name}`);

  // The same settings the kit's streams get (file storage, limits, 2 min dedupe window).
  const streamSettings = { replicas: 1, maxAgeMs: 3_600_000, duplicateWindowMs: 120_000 };
  const rawStream = `${streamPrefix}RAW`;
  const rawSubject = `${namespace}.raw.stock.changed`;
  await jsm.streams.add({
    name: rawStream,
    subjects: [`${namespace}.raw.>`],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    max_age: nanos(streamSettings.maxAgeMs),
    duplicate_window: nanos(streamSettings.duplicateWindowMs),
    num_replicas: 1,
  });
  await ensureStreams(jsm, names, ["inventory"], streamSettings);
  await ensureStreams(jsm, warmNames, ["inventory"], streamSettings);
  const kitStream = names.stream("inventory");

  // Raw stream sequences: warm-up W, then N measured one by one, then E end to end; the
  // kit stream has N, then E.
  const W = settings.warmupMessages;
  const N = settings.messages;
  const E = settings.e2eMessages;

  // ---- raw JetStream ----
  say();
  await warmUp("raw", W, async () => {
    await publishRaw(js, rawSubject, makeEvents(W), settings.relayBatch);
    await addDurable(jsm, rawStream, "raw_warm", 1);
    const stop = await consumeRaw(js, rawStream, "raw_warm", () => {});
    await untilAcked(jsm, rawStream, "raw_warm", W);
    await stop();
  });
  const rawPublish = await measure("raw publish", N, async () => {
    await publishRaw(js, rawSubject, makeEvents(N), settings.relayBatch);
  });
  await addDurable(jsm, rawStream, "raw", W + 1);
  const rawConsume = await measure("raw consume", N, async () => {
    const stop = await consumeRaw(js, rawStream, "raw", () => {});
    await untilAcked(jsm, rawStream, "raw", W + N);
    await stop();
  });
  await addDurable(jsm, rawStream, "raw_e2e", W + N + 1);
  const rawLatency: number[] = [];
  const rawE2e = await measure("raw end to end", E, async () => {
    const sentAt = new Map<string, number>();
    const stop = await consumeRaw(js, rawStream, "raw_e2e", (eventId) => {
      const at = sentAt.get(eventId);
      if (at !== undefined) rawLatency.push(performance.now() - at);
    });
    await publishRaw(js, rawSubject, makeEvents(E), settings.relayBatch, (e) =>
      sentAt.set(e.eventId, performance.now()),
    );
    await untilAcked(jsm, rawStream, "raw_e2e", W + N + E);
    await stop();
  });
  rawE2e.latencyMs = stats(rawLatency);

  // ---- kit: outbox, relay, consumer ----
  say();
  const registry = new Registry();
  const kitLatency: number[] = [];
  let measuringLatency = false;
  // A relay and a consumer per phase: a stopped relay is not restarted (its LISTEN is closed).
  const newRelay = () => {
    const relay = createOutboxRelay({
      sql,
      nc,
      names,
      logger,
      registry,
      batchSize: settings.relayBatch,
    });
    cleanups.push(() => relay.stop());
    return relay;
  };
  const newConsumer = (on: typeof names, durable: string) => {
    const consumer = createEventConsumer({
      sql,
      nc,
      names: on,
      durable,
      domains: ["inventory"],
      // The inbox insert and its transaction are the work; the handler adds none.
      handlers: [
        onEvent(StockLevelChangedSchema, async (_tx, event) => {
          if (measuringLatency && event.occurredAt !== undefined) {
            const at = Number(event.occurredAt.seconds) * 1000 + event.occurredAt.nanos / 1e6;
            kitLatency.push(Date.now() - at);
          }
        }),
      ],
      maxDeliver: 5,
      logger,
      registry,
      concurrency: settings.consumerConcurrency,
    });
    cleanups.push(() => consumer.stop());
    return consumer;
  };
  // The warm-up's events go to a namespace (streams) and durable of their own, so the
  // measured stages start on an empty stream and a fresh durable, as the raw ones do.
  await warmUp("kit", W, async () => {
    await writeOutbox(sql, warmNames, W, settings.txBatch);
    const relay = newRelay();
    relay.start();
    const consumer = newConsumer(warmNames, "bench_warm");
    await consumer.start();
    await untilAcked(jsm, warmNames.stream("inventory"), "bench_warm", W);
    await consumer.stop();
    await relay.stop();
  });
  const write = await measure("kit outbox write", N, async () => {
    await writeOutbox(sql, names, N, settings.txBatch);
  });
  const relay = newRelay();
  const relayStage = await measure("kit relay", N, async () => {
    relay.start();
    await untilStored(jsm, kitStream, N);
  });
  const consumer = newConsumer(names, "bench");
  const consumeStage = await measure("kit consume", N, async () => {
    await consumer.start();
    await untilAcked(jsm, kitStream, "bench", N);
  });
  // Relay and consumer keep running: write more and time it to the last ack.
  const kitE2e = await measure("kit end to end", E, async () => {
    measuringLatency = true;
    await writeOutbox(sql, names, E, settings.txBatch);
    await untilAcked(jsm, kitStream, "bench", N + E);
  });
  kitE2e.latencyMs = stats(kitLatency);
  await consumer.stop();
  await relay.stop();

  // Every event went through exactly once.
  const total = N + E;
  const redelivered = (await jsm.consumers.info(kitStream, "bench")).num_redelivered;
  const [counts] = await sql<{ unpublished: string; inbox: string }[]>`
    select (select count(*) from event_outbox where published_at is null)::text as unpublished,
           (select count(*) from event_inbox where consumer = 'bench')::text as inbox`;
  const stored = (await jsm.streams.info(kitStream)).state.messages;
  if (Number(counts?.unpublished) !== 0) problems.push(`${counts?.unpublished} events unpublished`);
  if (Number(counts?.inbox) !== total) {
    problems.push(`inbox has ${counts?.inbox} events, ${total} were written`);
  }
  if (stored !== total) problems.push(`the kit stream holds ${stored} messages, expected ${total}`);
  const dead = (await jsm.streams.info(names.deadLetterStream)).state.messages;
  if (dead > 0) problems.push(`${dead} events dead-lettered`);
  if (redelivered > 0) warnings.push(`the kit consumer had ${redelivered} messages redelivered`);

  // ---- report ----
  const f = (v: number, d = 0) => (Number.isFinite(v) ? v.toFixed(d) : "-");
  const cpuCols = ["runner", "postgres", "nats-server"];
  say();
  say(
    `${"stage".padEnd(26)}${"msgs".padStart(8)}${"s".padStart(8)}${"msgs/s".padStart(10)}` +
      `${cpuCols.map((c) => `${c === "runner" ? "this" : c.replace("-server", "")} µs`.padStart(13)).join("")}` +
      `${"p50 ms".padStart(9)}${"p99 ms".padStart(9)}`,
  );
  const line = (label: string, s: Stage) =>
    say(
      label.padEnd(26) +
        [String(s.messages).padStart(8), f(s.seconds, 2).padStart(8), f(s.perSecond).padStart(10)]
          .concat(cpuCols.map((c) => f(s.cpuUsPerMessage[c] ?? Number.NaN).padStart(13)))
          .concat([
            f(s.latencyMs?.p50 ?? Number.NaN, 1).padStart(9),
            f(s.latencyMs?.p99 ?? Number.NaN, 1).padStart(9),
          ])
          .join(""),
    );
  line("(a) raw publish", rawPublish);
  line("(a) raw consume", rawConsume);
  line("(a) raw end to end", rawE2e);
  line("(b) kit outbox write", write);
  line("(b) kit relay", relayStage);
  line("(b) kit consume", consumeStage);
  line("(b) kit end to end", kitE2e);
  say();
  const ratio = (kit: Stage, raw: Stage) => kit.perSecond / raw.perSecond;
  const ratios = {
    relayVsRawPublish: ratio(relayStage, rawPublish),
    consumerVsRawConsume: ratio(consumeStage, rawConsume),
    endToEndVsRaw: ratio(kitE2e, rawE2e),
  };
  say(`  kit/raw  relay ÷ raw publish       ${ratios.relayVsRawPublish.toFixed(3)}`);
  say(`  kit/raw  consumer ÷ raw consume    ${ratios.consumerVsRawConsume.toFixed(3)}`);
  say(`  kit/raw  end to end                ${ratios.endToEndVsRaw.toFixed(3)}`);
  say(
    "  latency: raw = publish call -> consumed; kit = occurred_at (before the outbox write) -> handler",
  );
  const stages = { rawPublish, rawConsume, rawE2e, write, relayStage, consumeStage, kitE2e };
  for (const [id, s] of Object.entries(stages)) {
    if (s.othersCores > NOISE_CORES) {
      warnings.push(`${id}: other processes used ${s.othersCores.toFixed(2)} cores`);
    }
  }
  printProblems(say, "PROBLEMS DURING THE RUN: the figures above are NOT valid", problems);
  printWarnings(say, warnings);
  const resultsFile = await writeResults("events", started, {
    nats: nc.info?.version,
    settings,
    machineBusyBefore: busy,
    stages,
    ratios,
    problems,
    warnings,
  });
  say(`results: ${resultsFile}`);
  if (problems.length > 0) process.exitCode = 1;
}

/** Runs one stage, timing it and the CPU spent by this process, Postgres and NATS. */
async function measure(label: string, count: number, run: () => Promise<void>): Promise<Stage> {
  process.stdout.write(`${label}: ${count} messages… `);
  const infra = startInfraCpu(["postgres", "nats-server"]);
  const self = process.cpuUsage();
  const machine = new MachineMonitor();
  const began = performance.now();
  await run();
  const seconds = (performance.now() - began) / 1000;
  const used = infra.stop();
  const runner = process.cpuUsage(self);
  const runnerSeconds = (runner.user + runner.system) / 1e6;
  const load = machine.stop(used["nats-server"] ?? 0);
  const perMessage = (s: number) => (s * 1e6) / count;
  const stage: Stage = {
    messages: count,
    seconds,
    perSecond: count / seconds,
    cpuUsPerMessage: {
      runner: perMessage(runnerSeconds),
      postgres: perMessage(used.postgres ?? 0),
      "nats-server": perMessage(used["nats-server"] ?? 0),
    },
    othersCores: load.othersCores,
  };
  say(`${Math.round(stage.perSecond)} msgs/s`);
  return stage;
}

/** A durable pull consumer, explicit ack, from stream sequence `startSeq` on. */
async function addDurable(
  jsm: JetStreamManager,
  stream: string,
  durable: string,
  startSeq: number,
): Promise<void> {
  await jsm.consumers.add(stream, {
    durable_name: durable,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.StartSequence,
    opt_start_seq: startSeq,
  });
}

/** Runs a path once on a few messages before measuring it. */
async function warmUp(label: string, count: number, run: () => Promise<void>): Promise<void> {
  process.stdout.write(`${label} warm-up: ${count} messages… `);
  const began = performance.now();
  await run();
  say(`${((performance.now() - began) / 1000).toFixed(2)} s`);
}

/** Events as services write them: a fresh event_id and occurred_at each. */
function makeEvents(count: number): OutboundEvent[] {
  return Array.from({ length: count }, (_, i) => stockEvent(i));
}

function stockEvent(i: number): OutboundEvent {
  const productId = `00000000-0000-4000-8000-${String(i % 1000).padStart(12, "0")}`;
  return newEvent(StockLevelChangedSchema, {
    productId,
    stock: { productId, sku: `SKU-${i % 1000}`, onHand: 1000n, reserved: BigInt(i % 7) },
  });
}

/**
 * Publishes like the relay: the same headers and Nats-Msg-Id, `window` publishes sent in
 * order and their acks awaited together, window after window. Payloads are encoded first,
 * as the relay reads them encoded from the outbox.
 */
async function publishRaw(
  js: JetStreamClient,
  subject: string,
  events: OutboundEvent[],
  window: number,
  onSend: (e: OutboundEvent) => void = () => {},
): Promise<void> {
  const encoded = events.map((e) => ({
    event: e,
    payload: toBinary(StockLevelChangedSchema, e.message as never),
  }));
  for (let i = 0; i < encoded.length; i += window) {
    const acks = encoded.slice(i, i + window).map(({ event, payload }) => {
      const h = headers();
      h.set(EventHeaders.contentType, PROTOBUF_CONTENT_TYPE);
      h.set(EventHeaders.eventType, StockLevelChangedSchema.typeName);
      onSend(event);
      return js.publish(subject, payload, { msgID: event.eventId, headers: h });
    });
    await Promise.all(acks);
  }
}

/** A durable pull consumer's messages, decoded and acked one by one, in the background. */
async function consumeRaw(
  js: JetStreamClient,
  stream: string,
  durable: string,
  onEventId: (eventId: string) => void,
): Promise<() => Promise<void>> {
  const consumer = await js.consumers.get(stream, durable);
  const iterator = await consumer.consume();
  const loop = (async () => {
    for await (const msg of iterator) {
      const event = fromBinary(StockLevelChangedSchema, msg.data);
      onEventId(event.eventId);
      msg.ack();
    }
  })();
  return async () => {
    await iterator.close();
    await loop;
  };
}

/** Writes `count` events to the outbox, `perTx` per transaction, as a service would. */
async function writeOutbox(
  sql: Sql,
  names: ReturnType<typeof createEventNames>,
  count: number,
  perTx: number,
): Promise<void> {
  for (let i = 0; i < count; i += perTx) {
    const batch = Array.from({ length: Math.min(perTx, count - i) }, (_, j) => stockEvent(i + j));
    await sql.begin((tx) => writeEvents(tx, names, batch));
  }
}

/** Resolves once the durable has acked every message up to stream sequence `lastSeq`, polling. */
async function untilAcked(
  jsm: JetStreamManager,
  stream: string,
  durable: string,
  lastSeq: number,
): Promise<void> {
  const deadline = Date.now() + 600_000;
  for (;;) {
    const info = await jsm.consumers.info(stream, durable);
    const acked = info.ack_floor.stream_seq;
    if (acked >= lastSeq && info.num_ack_pending === 0) return;
    if (Date.now() > deadline) throw new Error(`${durable}: acked up to ${acked} of ${lastSeq}`);
    await sleep(POLL_MS);
  }
}

/** Resolves once the stream holds `count` messages, polling. */
async function untilStored(jsm: JetStreamManager, stream: string, count: number): Promise<void> {
  const deadline = Date.now() + 600_000;
  for (;;) {
    const { messages: stored } = (await jsm.streams.info(stream)).state;
    if (stored >= count) return;
    if (Date.now() > deadline) throw new Error(`${stream}: only ${stored} of ${count} stored`);
    await sleep(POLL_MS);
  }
}

async function cleanup(): Promise<void> {
  for (const c of cleanups.reverse()) await c().catch(() => {});
  cleanups.length = 0;
}

await runBenchmark(main, cleanup);
