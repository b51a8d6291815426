import {
  createRuntime,
  instrumentStore,
  migrateEventTables,
  openServiceData,
  openServiceEvents,
  type RuntimeOverrides,
  type ServiceHost,
  serve,
} from "@meshmart/kit";
import type { NotificationsConfig } from "./config.js";
import { createEventEffects } from "./event-handlers.js";
import { createNotificationRoutes } from "./routes.js";
import { createLogSender, type NotificationSender } from "./sender.js";
import { createNotificationStore } from "./store.js";
import { CONSUMER, createSubscriptions } from "./subscriptions.js";

export { type NotificationsConfig, notificationsConfigSchema } from "./config.js";

/** Notifications' migrations folder. */
export const migrationsDir = new URL("../migrations/", import.meta.url);

/** Test seams beyond the runtime's: where notifications are delivered. */
export interface NotificationsOverrides extends RuntimeOverrides {
  sender?: NotificationSender;
}

/**
 * Starts notifications: migrates its database and the event tables, consumes identity's
 * and orders' events (each at most one notification per event and kind), publishes
 * NotificationSent through its outbox, and serves ListNotifications. `close()` stops
 * serving, drains the consumer, then releases NATS and the pool.
 */
export async function startNotifications(
  config: NotificationsConfig,
  overrides: NotificationsOverrides = {},
): Promise<ServiceHost> {
  const runtime = await createRuntime(config, overrides);
  const { logger, registry } = runtime;
  const data = await openServiceData(runtime, {
    databaseUrl: config.DATABASE_URL,
    redisUrl: config.REDIS_URL,
    migrations: migrationsDir,
  });
  try {
    await migrateEventTables(data.sql, logger);
    const events = await openServiceEvents(runtime, {
      sql: data.sql,
      config,
      publishes: ["notifications"],
    });
    try {
      const store = instrumentStore(createNotificationStore(data.sql), "notifications", registry);
      const effects = createEventEffects({
        store,
        sender: overrides.sender ?? createLogSender(logger),
        names: events.names,
      });
      events.startRelay();
      await events.consume({
        durable: CONSUMER,
        domains: ["identity", "orders"],
        handlers: createSubscriptions(effects),
      });
      return await serve(runtime, {
        routes: createNotificationRoutes({ store }),
        checks: [...data.checks, ...events.checks],
        onClose: async () => {
          await events.close();
          await data.close();
        },
      });
    } catch (reason) {
      await events.close();
      throw reason;
    }
  } catch (reason) {
    await data.close(1);
    throw reason;
  }
}
