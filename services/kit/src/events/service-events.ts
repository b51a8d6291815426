import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Sql } from "postgres";
import type { Runtime } from "../runtime.js";
import type { DependencyCheck } from "../server/health-monitor.js";
import type { EventsConfig } from "./config.js";
import { createEventConsumer, type EventConsumer, type EventHandler } from "./consumer.js";
import { createEventNames, type EventDomain, type EventNames } from "./names.js";
import { connectNats, natsCheck } from "./nats.js";
import { createOutboxRelay, type OutboxRelay } from "./relay.js";
import { ensureStreams, type StreamSettings } from "./streams.js";

/** What {@link openServiceEvents} needs besides the runtime. */
export interface ServiceEventsOptions {
  /** The service's pool; its database has the event tables (migrateEventTables). */
  sql: Sql;
  config: EventsConfig;
  /** Domains whose streams this service publishes to (created or updated at start). */
  publishes: readonly EventDomain[];
}

/** What {@link ServiceEvents.consume} needs. */
export interface ConsumeOptions {
  /** Durable consumer name (stable across deploys), usually the service name. */
  durable: string;
  domains: readonly EventDomain[];
  handlers: readonly EventHandler[];
  /**
   * Events handled at once (default 1: in stream order). Only for handlers whose events
   * are independent of each other's order, such as one notification per event.
   */
  concurrency?: number;
}

/** A service's connection to the event layer. */
export interface ServiceEvents {
  names: EventNames;
  nc: NatsConnection;
  /** NATS (non-critical: the outbox buffers while it is away), for `serve`. */
  checks: DependencyCheck[];
  /** Starts the outbox relay (once; later calls do nothing). */
  startRelay(): void;
  /** Sets up a durable consumer (and the streams it reads, if missing) and starts consuming. */
  consume(options: ConsumeOptions): Promise<void>;
  /** Stops consumers (waiting for handlers in flight), then the relay, then drains NATS. */
  close(): Promise<void>;
}

/**
 * Connects a service to NATS JetStream: the streams of the domains it publishes (and the
 * dead-letter stream) are created or updated, and it gets its relay and consumers.
 * Call after `migrateEventTables(sql, logger)`. If setting up fails, the connection is
 * closed before the error propagates.
 */
export async function openServiceEvents(
  runtime: Runtime,
  options: ServiceEventsOptions,
): Promise<ServiceEvents> {
  const { logger, registry } = runtime;
  const { sql, config } = options;
  const names = createEventNames(config.EVENTS_NAMESPACE);
  const settings: StreamSettings = {
    replicas: config.STREAM_REPLICAS,
    maxAgeMs: config.STREAM_MAX_AGE_MS,
    duplicateWindowMs: config.STREAM_DUPLICATE_WINDOW_MS,
  };
  const nc = await connectNats({
    url: config.NATS_URL,
    name: runtime.config.SERVICE_NAME,
    logger,
  });
  try {
    await ensureStreams(await jetstreamManager(nc), names, options.publishes, settings);
  } catch (reason) {
    await nc.close();
    throw reason;
  }

  let relay: OutboxRelay | undefined;
  const consumers: EventConsumer[] = [];
  let closing: Promise<void> | undefined;
  return {
    names,
    nc,
    checks: [natsCheck(nc)],
    startRelay() {
      relay ??= createOutboxRelay({
        sql,
        nc,
        names,
        logger,
        registry,
        batchSize: config.OUTBOX_BATCH_SIZE,
        gatherMs: config.OUTBOX_GATHER_MS,
      });
      relay.start();
    },
    async consume(consumeOptions) {
      const consumer = createEventConsumer({
        sql,
        nc,
        names,
        durable: consumeOptions.durable,
        domains: consumeOptions.domains,
        handlers: consumeOptions.handlers,
        ...(consumeOptions.concurrency === undefined
          ? {}
          : { concurrency: consumeOptions.concurrency }),
        maxDeliver: config.CONSUMER_MAX_DELIVER,
        logger,
        registry,
        streams: settings,
      });
      consumers.push(consumer);
      await consumer.start();
    },
    close() {
      closing ??= (async () => {
        await Promise.all(consumers.map((c) => c.stop()));
        await relay?.stop();
        // Drain flushes pending acks; a NATS that is away would make it wait forever.
        let timer: NodeJS.Timeout | undefined;
        const drained = await Promise.race([
          nc.drain().then(
            () => true,
            () => false,
          ),
          new Promise<boolean>((resolve) => {
            timer = setTimeout(() => resolve(false), 5_000);
          }),
        ]);
        clearTimeout(timer);
        if (!drained && !nc.isClosed()) await nc.close();
      })();
      return closing;
    },
  };
}
