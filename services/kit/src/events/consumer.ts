import { type DescMessage, fromBinary, type MessageShape } from "@bufbuild/protobuf";
import {
  AckPolicy,
  type ConsumerConfig,
  type ConsumerInfo,
  type ConsumerMessages,
  DeliverPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  jetstream,
  jetstreamManager,
  ReplayPolicy,
} from "@nats-io/jetstream";
import { type NatsConnection, nanos } from "@nats-io/transport-node";
import { context, propagation, ROOT_CONTEXT, SpanKind, trace } from "@opentelemetry/api";
import type { Logger } from "pino";
import type { Sql, TransactionSql } from "postgres";
import type { Registry } from "prom-client";
import { endSpanWithError } from "../observability/tracing.js";
import {
  copyAppHeaders,
  EventHeaders,
  headerSafe,
  headersRecord,
  headerValue,
  natsHeadersGetter,
} from "./headers.js";
import { sharedCounter, sharedGauge, sharedHistogram } from "./metrics.js";
import { domainOf, type EventDomain, type EventNames } from "./names.js";
import { serverAtLeast } from "./nats.js";
import { ensureStreams, type StreamSettings } from "./streams.js";

/** What a handler learns about the message besides the event itself. */
export interface EventMeta {
  /** The event's event_id (from the payload): the inbox key. */
  eventId: string;
  subject: string;
  /** 1 on the first delivery. */
  deliveryCount: number;
  /** Sequence of the message in its stream. */
  streamSeq: number;
  /** The message's headers (first value of each). */
  headers: Readonly<Record<string, string>>;
}

/** A typed event handler for {@link createEventConsumer}; build one with {@link onEvent}. */
export interface EventHandler {
  readonly schema: DescMessage;
  handle(tx: TransactionSql, event: MessageShape<DescMessage>, meta: EventMeta): Promise<void>;
}

/**
 * A handler for events of `schema`. It runs inside the transaction that records the event
 * in the inbox: make every change with `tx` (and write follow-up events with
 * `writeEvents(tx, ...)`), so the effect and "processed" commit together. Throw to have
 * the event retried (with backoff) and, after the consumer's maxDeliver, dead-lettered.
 */
export function onEvent<Desc extends DescMessage>(
  schema: Desc,
  handle: (tx: TransactionSql, event: MessageShape<Desc>, meta: EventMeta) => Promise<void>,
): EventHandler {
  return { schema, handle: handle as EventHandler["handle"] };
}

/** Options for {@link createEventConsumer}. */
export interface EventConsumerOptions {
  sql: Sql;
  nc: NatsConnection;
  names: EventNames;
  /** Durable consumer name, also the inbox's `consumer` key: `[A-Za-z0-9_-]`, stable across deploys. */
  durable: string;
  /** Streams to read; every handler's event must belong to one of them. */
  domains: readonly EventDomain[];
  handlers: readonly EventHandler[];
  /** Deliveries before a failing event is dead-lettered. */
  maxDeliver: number;
  /**
   * Redelivery delay after the n-th failed delivery: `backoffMs[n - 1]`, the last entry
   * repeating (default 1 s, 2 s, 4 s, 8 s, 16 s, 30 s).
   */
  backoffMs?: readonly number[];
  logger: Logger;
  registry: Registry;
  /** Time JetStream waits for an ack before redelivering (default 30 s); long handlers extend it. */
  ackWaitMs?: number;
  /** Messages handled at the same time per stream (default 1: stream order is kept). */
  concurrency?: number;
  /**
   * When set, the streams read are created first if missing (never updated: the publisher
   * owns them), so consumers and publishers may start in any order.
   */
  streams?: StreamSettings;
  /** Inbox rows of this consumer older than this are deleted (default 35 days, beyond the dead-letter age). */
  inboxRetentionMs?: number;
  /** How often consumer_pending is refreshed (default 10 s). */
  pendingPollMs?: number;
}

/** A running consumer. */
export interface EventConsumer {
  /** Sets up the durable consumers (failing if that fails), then consumes in the background. */
  start(): Promise<void>;
  /** Stops fetching, hands buffered messages back, and waits for handlers in flight. */
  stop(): Promise<void>;
}

const DEFAULT_BACKOFF_MS = [1_000, 2_000, 4_000, 8_000, 16_000, 30_000];
const DURABLE = /^[A-Za-z0-9_-]{1,64}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const RESTART_BACKOFF_MS = [250, 500, 1_000, 2_000, 5_000];

/**
 * A durable, idempotent, bounded-retry consumer of event streams.
 *
 * Per stream one durable pull consumer (explicit ack, filtered to the handled subjects).
 * Each message: the handler is picked by the Meshmart-Event-Type header (else the
 * subject), the payload decoded, and in ONE transaction the event is recorded in
 * `event_inbox` — if it was already there the handler is skipped (a redelivery) — and
 * the handler runs; then the message is acked. A failing handler is nak'ed with backoff
 * until the delivery count reaches maxDeliver, then copied to the dead-letter stream
 * with the reason and terminated; a message that cannot be decoded, or of an unknown
 * type, is dead-lettered at once. Errors meaning Postgres is unreachable never
 * dead-letter: the event waits for the database.
 *
 * The consumer survives NATS restarts (the message iterator is re-created with backoff)
 * and Postgres restarts (the transaction fails, the message comes back).
 */
export function createEventConsumer(options: EventConsumerOptions): EventConsumer {
  const { sql, nc, names, durable, logger, registry } = options;
  if (!DURABLE.test(durable)) {
    throw new Error(`consumer name must match ${DURABLE}; got ${JSON.stringify(durable)}`);
  }
  if (!Number.isInteger(options.maxDeliver) || options.maxDeliver < 1) {
    throw new Error("maxDeliver must be a positive integer");
  }
  const backoffMs = options.backoffMs ?? DEFAULT_BACKOFF_MS;
  if (backoffMs.length === 0) throw new Error("backoffMs must not be empty");
  const ackWaitMs = options.ackWaitMs ?? 30_000;
  const concurrency = Math.max(1, options.concurrency ?? 1);
  const inboxRetentionMs = options.inboxRetentionMs ?? 35 * 24 * 3_600_000;
  const pendingPollMs = options.pendingPollMs ?? 10_000;
  const log = logger.child({ component: "event-consumer", consumer: durable });
  const tracer = trace.getTracer("meshmart-kit");

  // Handlers by type and by subject, grouped per stream.
  const byType = new Map<string, RoutedHandler>();
  const bySubject = new Map<string, RoutedHandler>();
  const subjectsByDomain = new Map<EventDomain, string[]>();
  for (const handler of options.handlers) {
    const domain = domainOf(handler.schema);
    if (!options.domains.includes(domain)) {
      throw new Error(
        `handler for ${handler.schema.typeName} needs domain "${domain}" in the consumer's domains`,
      );
    }
    const subject = names.subjectOf(handler.schema);
    if (byType.has(handler.schema.typeName)) {
      throw new Error(`two handlers for ${handler.schema.typeName}`);
    }
    const routed = { handler, subject, type: handler.schema.typeName };
    byType.set(routed.type, routed);
    bySubject.set(subject, routed);
    subjectsByDomain.set(domain, [...(subjectsByDomain.get(domain) ?? []), subject]);
  }
  for (const domain of new Set(options.domains)) {
    if (!subjectsByDomain.has(domain)) {
      log.warn({ domain }, "no handler for any event of this domain; not consuming its stream");
    }
  }

  const consumed = sharedCounter(
    registry,
    "events_consumed_total",
    "Event messages handled, by outcome: processed, duplicate (already in the inbox), retried, dead_lettered, ignored, requeued (handed back at shutdown).",
    ["consumer", "type", "outcome"],
  );
  const deadLettered = sharedCounter(
    registry,
    "events_dead_lettered_total",
    "Event messages a consumer gave up on and copied to the dead-letter stream.",
    ["consumer", "type"],
  );
  const pendingGauge = sharedGauge(
    registry,
    "consumer_pending",
    "Messages in the stream not yet delivered to the durable consumer (num_pending).",
    ["consumer", "stream"],
  );
  const handlerSeconds = sharedHistogram(
    registry,
    "event_handler_duration_seconds",
    "Time to handle one event message, inbox transaction included.",
    ["consumer", "type"],
    [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  );

  let js: JetStreamClient | undefined;
  let jsm: JetStreamManager | undefined;
  let stopping = false;
  const loops: Promise<void>[] = [];
  const iterators = new Set<ConsumerMessages>();
  const sleepers = new Set<() => void>();
  let pendingTimer: NodeJS.Timeout | undefined;
  let lastInboxCleanup = 0;

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      if (stopping) return resolve();
      const done = () => {
        clearTimeout(timer);
        sleepers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      sleepers.add(done);
    });

  const delayAfter = (deliveryCount: number) =>
    backoffMs[Math.min(Math.max(deliveryCount, 1), backoffMs.length) - 1] ?? 1_000;

  /** Creates the durable, or brings its settings in line. */
  const setUp = async (domain: EventDomain, subjects: string[]) => {
    if (jsm === undefined) throw new Error("consumer not started");
    if (options.streams !== undefined) {
      await ensureStreams(jsm, names, [domain], { ...options.streams, updateExisting: false });
    }
    const stream = names.stream(domain);
    // Servers before 2.10 take one filter subject: the whole domain, skipping other types.
    const filter: Partial<ConsumerConfig> = serverAtLeast(nc, "2.10.0")
      ? { filter_subjects: [...subjects].sort() }
      : { filter_subject: names.streamSubjects(domain)[0] ?? `${names.namespace}.${domain}.>` };
    const wanted: Partial<ConsumerConfig> = {
      ack_wait: nanos(ackWaitMs),
      // Unlimited: this consumer decides when to give up (and dead-letters); the server
      // dropping a message after N deliveries would lose it silently.
      max_deliver: -1,
      max_ack_pending: Math.max(100, concurrency * 20),
      ...filter,
    };
    let info: ConsumerInfo | undefined;
    try {
      info = await jsm.consumers.info(stream, durable);
    } catch (reason) {
      if (
        !(reason instanceof JetStreamApiError && reason.code === JetStreamApiCodes.ConsumerNotFound)
      ) {
        throw reason;
      }
    }
    if (info === undefined) {
      try {
        await jsm.consumers.add(stream, {
          durable_name: durable,
          ack_policy: AckPolicy.Explicit,
          deliver_policy: DeliverPolicy.All,
          replay_policy: ReplayPolicy.Instant,
          ...wanted,
        });
        return;
      } catch (reason) {
        // Another replica created it first: compare with what it made.
        info = await jsm.consumers.info(stream, durable).catch(() => undefined);
        if (info === undefined) throw reason;
      }
    }
    const current = info.config;
    const same =
      current.ack_wait === wanted.ack_wait &&
      current.max_deliver === wanted.max_deliver &&
      current.max_ack_pending === wanted.max_ack_pending &&
      filterKey(current) === filterKey(wanted);
    if (!same) {
      const update = { ...wanted } as Record<string, unknown>;
      // Switching between one filter and several: clear the other field.
      if (wanted.filter_subjects !== undefined) update.filter_subject = undefined;
      else update.filter_subjects = undefined;
      await jsm.consumers.update(stream, durable, update);
      log.info({ stream, filter }, "durable consumer updated");
    }
  };

  const deadLetter = async (
    msg: JsMsg,
    reason: string,
    eventId: string | undefined,
    type: string,
  ) => {
    if (js === undefined) throw new Error("consumer not started");
    const h = copyAppHeaders(msg.headers, true);
    h.set(EventHeaders.deadLetterReason, headerSafe(reason));
    h.set(EventHeaders.deadLetterConsumer, durable);
    h.set(EventHeaders.deadLetterSubject, msg.subject);
    h.set(EventHeaders.deadLetterStream, msg.info.stream);
    h.set(EventHeaders.deadLetterStreamSeq, String(msg.info.streamSequence));
    h.set(EventHeaders.deadLetterDeliveries, String(msg.info.deliveryCount));
    const id = eventId ?? baseMsgId(headerValue(msg.headers, EventHeaders.msgId));
    if (id !== undefined) h.set(EventHeaders.deadLetterEventId, id);
    await js.publish(names.deadLetterSubject(durable), msg.data, {
      headers: h,
      // A second dead-lettering of the same delivery (term lost, redelivered) is deduped.
      msgID: `dlq:${msg.info.stream}:${msg.info.streamSequence}:${durable}`,
    });
    msg.term();
    deadLettered.inc({ consumer: durable, type });
  };

  type Outcome = "processed" | "duplicate" | "retried" | "dead_lettered" | "ignored" | "requeued";

  const handleMessage = async (msg: JsMsg): Promise<"transient" | undefined> => {
    const started = performance.now();
    const deliveryCount = msg.info.deliveryCount;
    const streamSeq = msg.info.streamSequence;
    const typeHeader = headerValue(msg.headers, EventHeaders.eventType);
    const routed = typeHeader !== undefined ? byType.get(typeHeader) : bySubject.get(msg.subject);
    const done = (outcome: Outcome, type: string) => {
      consumed.inc({ consumer: durable, type, outcome });
      handlerSeconds.observe({ consumer: durable, type }, (performance.now() - started) / 1000);
    };

    if (!bySubject.has(msg.subject)) {
      // Only with a whole-domain filter (old servers): an event type this consumer ignores.
      msg.ack();
      done("ignored", "other");
      return undefined;
    }

    // Poison: cannot be handled however often it is retried.
    let poison: string | undefined;
    let event: MessageShape<DescMessage> | undefined;
    let eventId: string | undefined;
    if (routed === undefined || routed.subject !== msg.subject) {
      poison = `unknown event type ${JSON.stringify(typeHeader ?? "")} on subject ${msg.subject}`;
    } else {
      try {
        event = fromBinary(routed.handler.schema, msg.data);
        const id = (event as { eventId?: unknown }).eventId;
        if (typeof id === "string" && UUID.test(id)) eventId = id.toLowerCase();
        else poison = `event has no valid event_id (${JSON.stringify(id)})`;
      } catch (reason) {
        poison = `undecodable ${routed.type} payload: ${errorMessage(reason)}`;
      }
    }
    const type = routed?.type ?? "unknown";
    if (
      poison !== undefined ||
      event === undefined ||
      eventId === undefined ||
      routed === undefined
    ) {
      const reason = poison ?? "undecodable event";
      log.warn({ subject: msg.subject, streamSeq, reason }, "poison event message dead-lettered");
      try {
        await deadLetter(msg, reason, eventId, type);
        done("dead_lettered", type);
      } catch (error) {
        log.warn({ err: errorMessage(error), streamSeq }, "dead-lettering failed; will retry");
        msg.nak(delayAfter(deliveryCount));
        done("retried", type);
      }
      return undefined;
    }

    const meta: EventMeta = {
      eventId,
      subject: msg.subject,
      deliveryCount,
      streamSeq,
      headers: headersRecord(msg.headers),
    };
    const parent = propagation.extract(ROOT_CONTEXT, msg.headers, natsHeadersGetter);
    const span = tracer.startSpan(
      `${msg.subject} process`,
      {
        kind: SpanKind.CONSUMER,
        attributes: {
          "messaging.system": "nats",
          "messaging.operation.type": "process",
          "messaging.operation.name": "process",
          "messaging.destination.name": msg.subject,
          "messaging.consumer.group.name": durable,
          "messaging.message.id": eventId,
          "messaging.message.delivery_count": deliveryCount,
        },
      },
      parent,
    );
    // Long handlers tell JetStream they are alive, so it does not redeliver meanwhile.
    const keepAlive = setInterval(() => msg.working(), Math.max(1_000, ackWaitMs / 2));
    try {
      const outcome = await context.with(trace.setSpan(parent, span), () =>
        sql.begin(async (tx) => {
          const fresh = await tx`
            insert into event_inbox (consumer, event_id) values (${durable}, ${eventId})
            on conflict do nothing
            returning 1`;
          if (fresh.length === 0) return "duplicate" as const;
          await routed.handler.handle(tx, event, meta);
          return "processed" as const;
        }),
      );
      clearInterval(keepAlive);
      msg.ack();
      span.setAttribute("meshmart.event.outcome", outcome);
      span.end();
      done(outcome, type);
      return undefined;
    } catch (error) {
      clearInterval(keepAlive);
      endSpanWithError(span, error);
      const message = errorMessage(error);
      const transient = isDatabaseUnavailable(error);
      const fields = { type, eventId, streamSeq, deliveryCount, err: message };
      if (transient || deliveryCount < options.maxDeliver) {
        const delay = delayAfter(deliveryCount);
        log.warn({ ...fields, retryInMs: delay }, "event handler failed; will retry");
        msg.nak(delay);
        done("retried", type);
        return transient ? "transient" : undefined;
      }
      try {
        await deadLetter(msg, message, eventId, type);
        log.error(fields, "event handler failed for the last time; dead-lettered");
        done("dead_lettered", type);
      } catch (dlqError) {
        log.warn(
          { ...fields, dlqErr: errorMessage(dlqError) },
          "dead-lettering failed; will retry",
        );
        msg.nak(delayAfter(deliveryCount));
        done("retried", type);
      }
      return undefined;
    }
  };

  const consumeStream = async (domain: EventDomain, subjects: string[]) => {
    const stream = names.stream(domain);
    let failures = 0;
    while (!stopping) {
      let messages: ConsumerMessages | undefined;
      try {
        if (failures > 0) await setUp(domain, subjects);
        if (stopping || js === undefined) break;
        const consumer = await js.consumers.get(stream, durable);
        messages = await consumer.consume({ max_messages: Math.max(8, concurrency * 4) });
        iterators.add(messages);
        watchNotifications(messages, stream);
        if (failures > 0) log.info({ stream }, "consuming again");
        failures = 0;
        await processAll(messages);
      } catch (reason) {
        if (stopping) break;
        failures++;
        if (failures === 1 || failures % 10 === 0) {
          log.warn(
            { stream, err: errorMessage(reason), failures },
            "consumer interrupted; restarting",
          );
        }
      } finally {
        if (messages !== undefined) {
          iterators.delete(messages);
          await messages.close().catch(() => {});
        }
      }
      if (stopping || nc.isClosed()) break;
      // The iterator ended without an error (the consumer or stream went away): recreate.
      if (failures === 0) failures = 1;
      await sleep(RESTART_BACKOFF_MS[Math.min(failures, RESTART_BACKOFF_MS.length) - 1] ?? 5_000);
    }
  };

  /** The consumer or its stream gone (NATS lost its store): end the iterator to recreate them. */
  const watchNotifications = (messages: ConsumerMessages, stream: string) => {
    void (async () => {
      for await (const status of messages.status()) {
        if (
          (status.type === "consumer_not_found" && status.count >= 2) ||
          status.type === "consumer_deleted" ||
          status.type === "stream_not_found"
        ) {
          log.warn({ stream, status: status.type }, "durable consumer missing; recreating");
          messages.stop();
          return;
        }
      }
    })().catch(() => {});
  };

  const processAll = async (messages: ConsumerMessages) => {
    const inFlight = new Set<Promise<void>>();
    for await (const msg of messages) {
      if (stopping) {
        // Handed back at once, for another replica, instead of after ack_wait.
        msg.nak();
        consumed.inc({ consumer: durable, type: "unknown", outcome: "requeued" });
        continue;
      }
      const run = handleMessage(msg).then(
        async (result) => {
          // Postgres is away: pause rather than fail every buffered message at once.
          if (result === "transient") await sleep(delayAfter(1));
        },
        (reason: unknown) => {
          log.error({ err: errorMessage(reason) }, "event message handling crashed");
        },
      );
      inFlight.add(run);
      void run.finally(() => inFlight.delete(run));
      if (inFlight.size >= concurrency) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
  };

  const pollPending = async () => {
    if (jsm === undefined) return;
    for (const domain of subjectsByDomain.keys()) {
      const stream = names.stream(domain);
      try {
        const info = await jsm.consumers.info(stream, durable);
        pendingGauge.set({ consumer: durable, stream }, info.num_pending);
      } catch {
        // NATS away: keep the last value.
      }
    }
    if (Date.now() - lastInboxCleanup > 3_600_000) {
      lastInboxCleanup = Date.now();
      await sql`
        delete from event_inbox
        where consumer = ${durable}
          and processed_at < now() - ${inboxRetentionMs} * interval '1 millisecond'`.catch(
        (reason: unknown) => log.debug({ err: errorMessage(reason) }, "inbox cleanup failed"),
      );
    }
  };

  return {
    async start() {
      if (js !== undefined) return;
      jsm = await jetstreamManager(nc);
      js = jetstream(nc);
      for (const [domain, subjects] of subjectsByDomain) await setUp(domain, subjects);
      for (const [domain, subjects] of subjectsByDomain) {
        loops.push(
          consumeStream(domain, subjects).catch((reason) => {
            log.error({ domain, err: errorMessage(reason) }, "consumer loop ended unexpectedly");
          }),
        );
      }
      const poll = () => {
        pendingTimer = setTimeout(() => {
          void pollPending().finally(() => {
            if (!stopping) poll();
          });
        }, pendingPollMs);
        pendingTimer.unref();
      };
      void pollPending();
      poll();
      log.info(
        {
          streams: [...subjectsByDomain.keys()].map((d) => names.stream(d)),
          maxDeliver: options.maxDeliver,
        },
        "event consumer started",
      );
    },
    async stop() {
      if (stopping) return;
      stopping = true;
      clearTimeout(pendingTimer);
      for (const wake of sleepers) wake();
      // close() lets the iterator yield what it buffered (handed back above), then end.
      await Promise.all([...iterators].map((m) => m.close().catch(() => {})));
      await Promise.all(loops);
      for (const domain of subjectsByDomain.keys()) {
        pendingGauge.remove({ consumer: durable, stream: names.stream(domain) });
      }
    },
  };
}

interface RoutedHandler {
  handler: EventHandler;
  subject: string;
  type: string;
}

/** A consumer's filter as a comparable key (servers store one filter_subjects entry as filter_subject). */
function filterKey(config: Partial<ConsumerConfig>): string {
  const subjects =
    config.filter_subjects !== undefined && config.filter_subjects.length > 0
      ? config.filter_subjects
      : config.filter_subject
        ? [config.filter_subject]
        : [];
  return [...subjects].sort().join(",");
}

/** The event id inside a Nats-Msg-Id, without a replay suffix (`<id>:replay:<seq>`). */
function baseMsgId(msgId: string | undefined): string | undefined {
  if (msgId === undefined || msgId === "") return undefined;
  return msgId.split(":replay:")[0];
}

// postgres.js connection failures and Postgres's own "not now" answers: the event is
// fine, the database is not; it must wait, not be dead-lettered.
const UNAVAILABLE_CODES = new Set([
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "ENOTFOUND",
  "EAI_AGAIN",
  "57P01", // admin_shutdown
  "57P02", // crash_shutdown
  "57P03", // cannot_connect_now
  "53300", // too_many_connections
  "40001", // serialization_failure
  "40P01", // deadlock_detected
]);

function isDatabaseUnavailable(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code !== "string") return false;
  return UNAVAILABLE_CODES.has(code) || code.startsWith("08");
}

function errorMessage(reason: unknown): string {
  return reason instanceof Error ? reason.message : String(reason);
}
