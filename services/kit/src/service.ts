import type { RequestListener } from "node:http";
import type { KitConfig } from "./config.js";
import { openServiceData, type ServiceData } from "./data/service-data.js";
import type { EventsConfig } from "./events/config.js";
import type { EventDomain } from "./events/names.js";
import { migrateEventTables } from "./events/outbox.js";
import {
  type ConsumeOptions,
  openServiceEvents,
  type ServiceEvents,
} from "./events/service-events.js";
import { createRuntime, type Runtime, type RuntimeOverrides, serve } from "./runtime.js";
import type { Routes, ServiceHost } from "./server/service-host.js";

/** A loop a service runs beside its RPCs (a saga worker, a sweeper). */
export interface Worker {
  start(): void;
  /** Resolves once the work in flight has finished and recorded its outcome. */
  stop(): Promise<void>;
}

/** What a service is made of, once its database and event layer are open. */
export interface ServiceParts {
  routes: Routes;
  /** Durable consumers to start; each handles its events once, through the inbox. */
  subscriptions?: readonly ConsumeOptions[];
  /** Started after the relay and consumers; stopped before them, in reverse order. */
  workers?: readonly Worker[];
  /** Plain HTTP on the Connect port for paths that are not RPCs (see `serve`). */
  httpFallback?: RequestListener;
}

/** What every service brings besides its parts: where its schema is, what it publishes. */
export interface ServiceDefinition<C> {
  /** The service's `migrations/` folder. */
  migrations: URL;
  /** The domains whose streams this service publishes to. */
  publishes: readonly EventDomain[];
  /** Builds the service from the open runtime, database and event layer. */
  build(context: {
    config: C;
    runtime: Runtime;
    data: ServiceData;
    events: ServiceEvents;
  }): ServiceParts | Promise<ServiceParts>;
}

/** The settings {@link startService} reads: the kit's, the event layer's, a database, Redis. */
export type ServiceConfig = KitConfig & EventsConfig & { DATABASE_URL: string; REDIS_URL: string };

/**
 * Starts a service the way every meshmart service starts: runtime, its database (migrated,
 * with the kit's outbox and inbox tables), NATS with its streams, the parts it builds, the
 * outbox relay, its consumers and workers, then the three listeners. `close()` unwinds in
 * reverse: listeners drain, workers finish their step, consumers drain, the relay publishes
 * what it can, then NATS, the pool and Redis close. A start that fails part-way closes
 * whatever it had opened before the error propagates.
 */
export async function startService<C extends ServiceConfig>(
  config: C,
  overrides: RuntimeOverrides,
  definition: ServiceDefinition<C>,
): Promise<ServiceHost> {
  const runtime = await createRuntime(config, overrides);
  const data = await openServiceData(runtime, {
    databaseUrl: config.DATABASE_URL,
    redisUrl: config.REDIS_URL,
    migrations: definition.migrations,
  });
  let events: ServiceEvents | undefined;
  const started: Worker[] = [];
  const stopAll = async (): Promise<void> => {
    for (const worker of started.reverse()) await worker.stop();
    await events?.close();
  };
  try {
    await migrateEventTables(data.sql, runtime.logger);
    events = await openServiceEvents(runtime, {
      sql: data.sql,
      config,
      publishes: definition.publishes,
    });
    const parts = await definition.build({ config, runtime, data, events });
    events.startRelay();
    for (const subscription of parts.subscriptions ?? []) await events.consume(subscription);
    for (const worker of parts.workers ?? []) {
      worker.start();
      started.push(worker);
    }
    return await serve(runtime, {
      routes: parts.routes,
      checks: [...data.checks, ...events.checks],
      ...(parts.httpFallback === undefined ? {} : { httpFallback: parts.httpFallback }),
      onClose: async () => {
        await stopAll();
        await data.close();
      },
    });
  } catch (reason) {
    await stopAll();
    await data.close(1);
    throw reason;
  }
}
