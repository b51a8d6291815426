import {
  createPageTokens,
  instrumentStore,
  type RuntimeOverrides,
  type ServiceHost,
  startService,
} from "@meshmart/kit";
import { ListNotificationsRequestSchema } from "@meshmart/kit/gen/meshmart/notifications/v1/notifications_service_pb.js";
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
export function startNotifications(
  config: NotificationsConfig,
  overrides: NotificationsOverrides = {},
): Promise<ServiceHost> {
  const { sender, ...runtimeOverrides } = overrides;
  return startService(config, runtimeOverrides, {
    migrations: migrationsDir,
    publishes: ["notifications"],
    build: ({ runtime, data, events }) => {
      const store = instrumentStore(
        createNotificationStore(data.sql),
        "notifications",
        runtime.registry,
      );
      const effects = createEventEffects({
        store,
        sender: sender ?? createLogSender(runtime.logger),
        names: events.names,
      });
      return {
        routes: createNotificationRoutes({
          store,
          pageTokens: createPageTokens(
            runtime.pageTokenKey(),
            ListNotificationsRequestSchema.field.pageToken,
          ),
        }),
        subscriptions: [
          {
            durable: CONSUMER,
            domains: ["identity", "orders"],
            handlers: createSubscriptions(effects),
            // Each event yields its own notification: their order does not matter.
            concurrency: 8,
          },
        ],
      };
    },
  });
}
