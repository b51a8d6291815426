import { randomBytes } from "node:crypto";
import { jetstream, type PubAck } from "@nats-io/jetstream";
import {
  headers,
  type NatsConnection,
  type QueuedIterator,
  type Status,
} from "@nats-io/transport-node";
import { propagation, ROOT_CONTEXT, SpanKind, trace } from "@opentelemetry/api";
import type { Logger } from "pino";
import postgres, { type Sql } from "postgres";
import { Gauge, type Registry } from "prom-client";
import { beginWithLast } from "../data/transaction.js";
import { endSpanWithError } from "../observability/tracing.js";
import { EventHeaders, natsHeadersSetter, PROTOBUF_CONTENT_TYPE } from "./headers.js";
import { sharedCounter } from "./metrics.js";
import type { EventNames } from "./names.js";

/** Options for {@link createOutboxRelay}. */
export interface OutboxRelayOptions {
  sql: Sql;
  nc: NatsConnection;
  names: EventNames;
  logger: Logger;
  registry: Registry;
  /** Rows published per transaction (default 256). */
  batchSize?: number;
  /** Fallback poll when no notification arrives (default 1000 ms). */
  pollIntervalMs?: number;
  /** How long one publish waits for JetStream's ack (default 5000 ms). */
  publishTimeoutMs?: number;
  /** Published rows are deleted once older than this (default 1 h). */
  retentionMs?: number;
  /** Upper bound of the retry backoff while NATS or Postgres fails (default 2 s). */
  maxBackoffMs?: number;
  /** How often the LISTEN connection is verified and, if lost, re-established (default 30 s). */
  listenCheckMs?: number;
  /**
   * The least time between two batches that publish while commits keep coming (default
   * 25 ms): a wake-up within this long of the last such batch waits for the rest of it,
   * so under load one batch (two round trips and its publishes) carries the rows of many
   * transactions instead of one or two each; after a quiet spell the first commit goes
   * out at once. Events are not on any request's path, so this costs no caller.
   */
  gatherMs?: number;
}

/** The outbox relay of one service process. */
export interface OutboxRelay {
  /** Starts relaying in the background (idempotent). */
  start(): void;
  /** Stops relaying; resolves once the batch in progress (if any) has finished. */
  stop(): Promise<void>;
  /**
   * Publishes everything pending now and resolves with how many rows this call published.
   * Rejects when a publish fails. Returns what it managed if another replica holds the
   * relay lock for more than a few seconds.
   */
  flush(): Promise<number>;
}

/** Notification channel the 002 migration's trigger signals on every outbox insert. */
export const OUTBOX_CHANNEL = "event_outbox";
/** Advisory lock of the active relay: "mmoutbox" in ASCII. */
const RELAY_LOCK_KEY = 0x6d6d6f7574626f78n;
const CLEANUP_EVERY_MS = 60_000;

interface OutboxRow {
  seq: string;
  event_id: string;
  subject: string;
  event_type: string;
  payload: Buffer;
  headers: Record<string, unknown> | null;
}

interface BatchResult {
  /** Another process holds the relay lock. */
  busy: boolean;
  published: number;
  /** A full batch went out: there may be more right away. */
  more: boolean;
  error?: unknown;
}

// Gauges read the database when scraped; the newest relay on a registry answers.
const statsSources = new WeakMap<Registry, () => Promise<OutboxStats>>();
interface OutboxStats {
  pending: number;
  lagSeconds: number;
}

/**
 * The transactional outbox relay: publishes committed `event_outbox` rows to JetStream,
 * in `seq` order, each with its event_id as Nats-Msg-Id so a row published twice (a crash
 * between the publish and the stamp) is stored once.
 *
 * One relay per database is active at a time: each batch runs in a transaction holding an
 * advisory lock, so replicas neither publish the same rows concurrently nor reorder them.
 * There is no cursor: every batch reads the oldest unpublished rows, so a row whose lower
 * seq commits late is still picked up. A batch's publishes are pipelined (sent in seq
 * order, acks awaited together); rows are stamped up to the first failure, and the rest is
 * retried with backoff, never skipped. It wakes on the insert trigger's NOTIFY (on a LISTEN
 * connection of its own, verified periodically and re-established after a Postgres
 * restart) and polls as a fallback.
 */
export function createOutboxRelay(options: OutboxRelayOptions): OutboxRelay {
  const { sql, nc, names, logger, registry } = options;
  const batchSize = options.batchSize ?? 256;
  const pollIntervalMs = options.pollIntervalMs ?? 1_000;
  const publishTimeoutMs = options.publishTimeoutMs ?? 5_000;
  const retentionMs = options.retentionMs ?? 3_600_000;
  // Short: a retry is one cheap query, and the relay (with it the LISTEN that makes
  // publishing prompt) is back within this long of Postgres or NATS returning.
  const maxBackoffMs = options.maxBackoffMs ?? 2_000;
  const listenCheckMs = options.listenCheckMs ?? 30_000;
  const gatherMs = options.gatherMs ?? 25;
  const js = jetstream(nc, { timeout: publishTimeoutMs });
  const tracer = trace.getTracer("meshmart-kit");
  const log = logger.child({ component: "outbox-relay", namespace: names.namespace });

  const published = sharedCounter(
    registry,
    "outbox_published_total",
    "Outbox events published to JetStream (including ones JetStream recognised as duplicates).",
  );
  const batches = sharedCounter(
    registry,
    "outbox_batches_total",
    "Outbox batches that published at least one row (outbox_published_total over this is rows per batch).",
  );
  const publishErrors = sharedCounter(
    registry,
    "outbox_publish_errors_total",
    "Outbox batches that failed to publish (NATS or Postgres errors); retried with backoff.",
  );
  registerStatsGauges(registry);
  let cachedStats: { at: number; value: Promise<OutboxStats> } | undefined;
  statsSources.set(registry, () => {
    // Both gauges are collected on one scrape: one query answers both.
    if (cachedStats === undefined || Date.now() - cachedStats.at > 500) {
      cachedStats = { at: Date.now(), value: readStats(sql) };
    }
    return cachedStats.value;
  });

  // flush() and the background loop never run a batch at the same time.
  let exclusive: Promise<unknown> = Promise.resolve();
  const serialized = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = exclusive.then(fn, fn);
    exclusive = run.catch(() => {});
    return run;
  };

  const publishRow = async (row: OutboxRow): Promise<PubAck> => {
    const stored = row.headers ?? {};
    const carrier: Record<string, string> = {};
    for (const [key, value] of Object.entries(stored)) {
      if (typeof value === "string") carrier[key] = value;
    }
    const parent = propagation.extract(ROOT_CONTEXT, carrier);
    const span = tracer.startSpan(
      `${row.subject} publish`,
      {
        kind: SpanKind.PRODUCER,
        attributes: {
          "messaging.system": "nats",
          "messaging.operation.type": "publish",
          "messaging.operation.name": "publish",
          "messaging.destination.name": row.subject,
          "messaging.message.id": row.event_id,
        },
      },
      parent,
    );
    const h = headers();
    // Stored context first, so it travels even when no propagator is installed.
    for (const [key, value] of Object.entries(carrier)) h.set(key, value);
    propagation.inject(trace.setSpan(parent, span), h, natsHeadersSetter);
    h.set(EventHeaders.contentType, PROTOBUF_CONTENT_TYPE);
    h.set(EventHeaders.eventType, row.event_type);
    try {
      const ack = await js.publish(row.subject, row.payload, {
        msgID: row.event_id,
        headers: h,
        timeout: publishTimeoutMs,
      });
      span.end();
      return ack;
    } catch (reason) {
      endSpanWithError(span, reason);
      throw reason;
    }
  };

  // What nc.status() has said about the connection since start(); undefined while not
  // watching or nothing is known yet. `natsChanges` tells a round trip that raced a change.
  let natsUp: boolean | undefined;
  let natsChanges = 0;
  let natsStatuses: AsyncIterable<Status> | undefined;
  const watchNats = () => {
    const statuses = nc.status();
    natsStatuses = statuses;
    void (async () => {
      for await (const status of statuses) {
        if (natsStatuses !== statuses) break;
        const up = natsStateAfter(status);
        if (up === undefined) continue;
        natsUp = up;
        natsChanges++;
      }
    })().catch(() => {});
  };
  const unwatchNats = () => {
    const statuses = natsStatuses;
    natsStatuses = undefined;
    natsUp = undefined;
    // nats.js's status iterator can be stopped; a generic one ends with the connection.
    (statuses as Partial<QueuedIterator<Status>> | undefined)?.stop?.();
  };
  /**
   * While disconnected the client would hold the publishes until they time out: fail the
   * batch now instead. The connection's status events answer without a round trip; only
   * while they are not watched (flush() before start()) or have said nothing yet does a
   * NATS round trip tell.
   */
  const assertNatsConnected = async () => {
    if (natsUp === true) return;
    if (natsUp === false) throw new Error("NATS is disconnected");
    const changes = natsChanges;
    await nc.rtt();
    if (natsStatuses !== undefined && natsChanges === changes) natsUp = true;
  };

  /** A NOTIFY arrived since the last batch read the outbox. */
  let notified = false;

  const runBatch = (): Promise<BatchResult> =>
    beginWithLast(sql, async (tx, last): Promise<BatchResult> => {
      // The select below sees every row whose NOTIFY has arrived by now (delivered only
      // once its transaction is visible): those wake-ups need no batch of their own.
      notified = false;
      // One round trip for both (postgres.js sends them pipelined). Separate statements,
      // not one: a statement's snapshot predates the lock it takes, so a select in the
      // locking statement could miss the stamps of the relay that just released it and
      // publish its rows again. The select only reads while the lock is held: the lock in
      // an uncorrelated subquery runs once (an InitPlan) and gates the scan; taken again
      // it is re-entrant, and if it was free only now the first statement's busy answer
      // discards the rows. Ordered by the column, not the text alias of the same name (which
      // ORDER BY would pick): seq 100 sorts before 99 as text, and no index serves the sort.
      const [[lock], rows] = await Promise.all([
        tx<{ locked: boolean }[]>`
          select pg_try_advisory_xact_lock(${RELAY_LOCK_KEY.toString()}::bigint) as locked`,
        tx<OutboxRow[]>`
          select seq::text as seq, event_id::text as event_id, subject, event_type, payload, headers
          from event_outbox
          where published_at is null
            and (select pg_try_advisory_xact_lock(${RELAY_LOCK_KEY.toString()}::bigint))
          order by event_outbox.seq
          limit ${batchSize}`,
      ]);
      if (lock?.locked !== true) return { busy: true, published: 0, more: false };
      if (rows.length === 0) return { busy: false, published: 0, more: false };
      await assertNatsConnected();
      // Sent in seq order (each publish goes out synchronously), acks awaited together.
      const results = await Promise.allSettled(rows.map(publishRow));
      let ok = 0;
      while (ok < results.length && results[ok]?.status === "fulfilled") ok++;
      if (ok > 0) {
        const seqs = rows.slice(0, ok).map((r) => r.seq);
        // Sent with the COMMIT; should it fail, the batch fails as before.
        last(
          tx`update event_outbox set published_at = now() where seq = any(${seqs}::bigint[])`.execute(),
        );
      }
      const failure = results[ok];
      return {
        busy: false,
        published: ok,
        more: ok === rows.length && rows.length === batchSize,
        ...(failure?.status === "rejected" ? { error: failure.reason } : {}),
      };
    });

  const batch = async (): Promise<BatchResult> => {
    let result: BatchResult;
    try {
      result = await runBatch();
    } catch (error) {
      result = { busy: false, published: 0, more: false, error };
    }
    if (result.published > 0) {
      published.inc(result.published);
      batches.inc();
    }
    if (result.error !== undefined) publishErrors.inc();
    return result;
  };

  // Background loop state.
  let running: Promise<void> | undefined;
  let stopped = true;
  let interrupt: (() => void) | undefined;
  let lastCleanup = 0;
  const wake = () => {
    notified = true;
    interrupt?.();
  };
  /** Waits `ms`; a notification cuts it short when `wakeable`, stop() always does. */
  const pause = (ms: number, wakeable: boolean) =>
    new Promise<void>((resolve) => {
      if (stopped || (wakeable && notified)) return resolve();
      const done = () => {
        clearTimeout(timer);
        interrupt = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      interrupt = wakeable ? done : () => (stopped ? done() : undefined);
    });

  const cleanup = async () => {
    if (Date.now() - lastCleanup < CLEANUP_EVERY_MS) return;
    lastCleanup = Date.now();
    try {
      // Bounded, so a backlog of old rows never turns into one long statement.
      const deleted = await sql`
        delete from event_outbox where seq in (
          select seq from event_outbox
          where published_at < now() - ${retentionMs} * interval '1 millisecond'
          limit 10000)`;
      if (deleted.count > 0) log.debug({ deleted: deleted.count }, "old outbox rows deleted");
    } catch (reason) {
      log.debug({ err: errorMessage(reason) }, "outbox cleanup failed; retried later");
    }
  };

  const listener = createListenSupervisor({
    sql,
    log,
    onNotify: wake,
    timeoutMs: LISTEN_CHECK_TIMEOUT_MS,
  });
  // The LISTEN is checked on its own timer: a check waiting on a dead connection must
  // not hold up publishing, which polling keeps going meanwhile.
  let checking: Promise<void> | undefined;
  let checkTimer: NodeJS.Timeout | undefined;
  const checkListen = () => {
    if (checking !== undefined || stopped) return;
    checking = listener.check().finally(() => {
      checking = undefined;
    });
  };

  const loop = async () => {
    let failures = 0;
    let nextPollAt = 0;
    /** When the last batch that published something started. */
    let lastPublishAt = Number.NEGATIVE_INFINITY;
    while (!stopped) {
      if (notified || Date.now() >= nextPollAt) {
        const gather = lastPublishAt + gatherMs - Date.now();
        if (notified && gather > 0) await pause(gather, false);
        if (stopped) break;
        const startedAt = Date.now();
        const result = await serialized(batch);
        if (result.published > 0) lastPublishAt = startedAt;
        if (stopped) break;
        if (result.error !== undefined) {
          failures++;
          const delay = Math.min(maxBackoffMs, 100 * 2 ** Math.min(failures, 10));
          // One line when it starts failing and then every tenth retry, not one per retry.
          if (failures === 1 || failures % 10 === 0) {
            log.warn(
              { err: errorMessage(result.error), failures, retryInMs: delay },
              "outbox publish failed; retrying",
            );
          }
          if (failures === 1) listener.suspect();
          await pause(delay, false);
          nextPollAt = 0;
          continue;
        }
        if (failures > 0) {
          log.info({ failures }, "outbox publishing recovered");
          failures = 0;
          // Whatever broke (Postgres most likely) may have taken the LISTEN with it.
          checkListen();
        }
        if (result.more) continue;
        nextPollAt = Date.now() + pollIntervalMs;
        await cleanup();
      }
      await pause(Math.max(0, nextPollAt - Date.now()), true);
    }
  };

  return {
    start() {
      if (!stopped) return;
      stopped = false;
      watchNats();
      const relayed = loop().catch((reason) => {
        log.error({ err: errorMessage(reason) }, "outbox relay stopped unexpectedly");
      });
      running = relayed;
      checkListen();
      checkTimer = setInterval(checkListen, listenCheckMs);
      checkTimer.unref();
      log.info({ batchSize, pollIntervalMs }, "outbox relay started");
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      interrupt?.();
      clearInterval(checkTimer);
      await running;
      running = undefined;
      unwatchNats();
      // Closing ends a check still waiting on the LISTEN connection.
      await listener.close();
      await checking;
    },
    async flush() {
      let total = 0;
      const giveUpAt = Date.now() + 5_000;
      for (;;) {
        const result = await serialized(batch);
        if (result.error !== undefined) throw result.error;
        total += result.published;
        if (result.busy) {
          if (Date.now() > giveUpAt) return total;
          await new Promise((resolve) => setTimeout(resolve, 25));
          continue;
        }
        if (!result.more) return total;
      }
    },
  };
}

interface ListenSupervisor {
  /** Verifies the LISTEN still works (a ping through NOTIFY) and re-establishes it if not. */
  check(): Promise<void>;
  /** Marks the LISTEN as possibly lost: the next check re-establishes it. */
  suspect(): void;
  close(): Promise<void>;
}

/** Longest a LISTEN check waits on Postgres; generous, since only the check waits. */
const LISTEN_CHECK_TIMEOUT_MS = 5_000;

/**
 * Keeps a LISTEN on the outbox channel alive across Postgres restarts, on a connection of
 * its own. (postgres.js's `sql.listen` re-issues LISTEN once when its connection closes;
 * if Postgres is still down at that moment the channel stays broken for good.) A closed
 * connection, or a NOTIFY ping not echoed by the next check, means the LISTEN is gone:
 * the next check sets it up again.
 */
function createListenSupervisor(options: {
  sql: Sql;
  log: Logger;
  onNotify: () => void;
  /** How long a check may wait on Postgres before its LISTEN connection is replaced. */
  timeoutMs: number;
}): ListenSupervisor {
  const { sql, log } = options;
  const ping = `ping:${randomBytes(8).toString("hex")}`;
  let client: Sql | undefined;
  let listening = false;
  let awaitingEcho = false;
  let everListened = false;
  let closed = false;

  const onnotify = (channel: string, payload: string) => {
    if (channel !== OUTBOX_CHANNEL) return;
    if (payload === ping) {
      awaitingEcho = false;
      return;
    }
    if (payload.startsWith("ping:")) return; // another replica's ping
    options.onNotify();
  };
  // The pool's own parsed options (host, credentials, TLS, timeouts), as postgres.js's
  // sql.listen does it: one connection, never idled out.
  const open = () =>
    postgres({
      ...(sql.options as object),
      max: 1,
      idle_timeout: null,
      max_lifetime: null,
      fetch_types: false,
      onnotify,
      onclose: () => {
        listening = false;
      },
    } as unknown as postgres.Options<Record<string, postgres.PostgresType>>);

  return {
    async check() {
      if (closed) return;
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no answer within ${options.timeoutMs} ms`)),
          options.timeoutMs,
        );
      });
      const current = client ?? open();
      client = current;
      let listenFailed = false;
      try {
        if (!listening || awaitingEcho) {
          listenFailed = true;
          await Promise.race([current.unsafe(`listen ${OUTBOX_CHANNEL}`), timedOut]);
          listenFailed = false;
          listening = true;
          awaitingEcho = false;
          if (everListened) log.info("outbox LISTEN re-established");
          everListened = true;
          // A row committed before the LISTEN took effect notified no one: poll once now
          // instead of waiting for the fallback poll (seen: a relay started with a long
          // poll interval left a row unpublished while its LISTEN connection was opening).
          options.onNotify();
        }
        awaitingEcho = true;
        await Promise.race([sql`select pg_notify(${OUTBOX_CHANNEL}, ${ping})`, timedOut]);
      } catch (reason) {
        // Postgres is away or the connection hangs: polling covers until a later check
        // succeeds, on a fresh connection if this one did not answer.
        awaitingEcho = true;
        if (listenFailed && !closed && client === current) {
          listening = false;
          client = undefined;
          void current.end({ timeout: 0 }).catch(() => {});
        }
        log.debug({ err: errorMessage(reason) }, "outbox LISTEN check failed");
      } finally {
        clearTimeout(timer);
      }
    },
    suspect() {
      awaitingEcho = true;
    },
    async close() {
      closed = true;
      await client?.end({ timeout: 1 });
      client = undefined;
    },
  };
}

function registerStatsGauges(registry: Registry): void {
  if (registry.getSingleMetric("outbox_pending") !== undefined) return;
  const read = async () => {
    const source = statsSources.get(registry);
    if (source === undefined) return undefined;
    try {
      return await source();
    } catch {
      return undefined; // database away: the scrape keeps the last values
    }
  };
  new Gauge({
    name: "outbox_pending",
    help: "Outbox rows not yet published.",
    registers: [registry],
    async collect() {
      const stats = await read();
      if (stats !== undefined) this.set(stats.pending);
    },
  });
  new Gauge({
    name: "outbox_lag_seconds",
    help: "Age of the oldest unpublished outbox row (0 when none).",
    registers: [registry],
    async collect() {
      const stats = await read();
      if (stats !== undefined) this.set(stats.lagSeconds);
    },
  });
}

async function readStats(sql: Sql): Promise<OutboxStats> {
  const [row] = await sql<{ pending: string; lag: number | null }[]>`
    select count(*)::text as pending,
           extract(epoch from now() - min(created_at))::float8 as lag
    from event_outbox where published_at is null`;
  return { pending: Number(row?.pending ?? 0), lagSeconds: Math.max(0, row?.lag ?? 0) };
}

/** Connected (true), not (false), or nothing learnt (undefined) from a status event. */
function natsStateAfter(status: Status): boolean | undefined {
  switch (status.type) {
    case "reconnect":
      return true;
    case "disconnect":
    case "staleConnection":
    case "forceReconnect":
    case "close":
      return false;
    default:
      return undefined;
  }
}

function errorMessage(reason: unknown): string {
  return reason instanceof Error ? reason.message : String(reason);
}
