import {
  instrumentStore,
  type RuntimeOverrides,
  type ServiceHost,
  startService,
} from "@meshmart/kit";
import type { InventoryConfig } from "./config.js";
import { createInventoryRoutes } from "./routes.js";
import { createInventoryStore } from "./store.js";
import { CONSUMER, createSubscriptions } from "./subscriptions.js";
import { createReservationSweeper } from "./sweeper.js";

export { type InventoryConfig, inventoryConfigSchema } from "./config.js";
export { seedStock } from "./seed.js";
export { createInventoryStore, type InventoryStore, type NewStock } from "./store.js";

/** Inventory's migrations folder. */
export const migrationsDir = new URL("../migrations/", import.meta.url);

/**
 * Starts inventory: migrates its database and the kit's event tables, ensures its event
 * stream, starts the outbox relay and the reservation expiry sweeper, and serves on the
 * configured ports (0 = free port, as tests use it). `close()` drains RPCs, then stops the
 * sweeper, the relay and NATS, and releases the pool.
 */
export function startInventory(
  config: InventoryConfig,
  overrides: RuntimeOverrides = {},
): Promise<ServiceHost> {
  return startService(config, overrides, {
    migrations: migrationsDir,
    publishes: ["inventory"],
    build: ({ runtime, data, events }) => {
      const { logger, registry } = runtime;
      const store = instrumentStore(
        createInventoryStore(data.sql, events.names),
        "inventory",
        registry,
      );
      return {
        routes: createInventoryRoutes({ store }),
        // Off by default: in a deployment stock arrives through SetStock, and a product
        // without a record is "unavailable", not "out of stock".
        subscriptions:
          config.INITIAL_STOCK_ON_PRODUCT_CREATED > 0
            ? [
                {
                  durable: CONSUMER,
                  domains: ["catalog"],
                  handlers: createSubscriptions(
                    store,
                    BigInt(config.INITIAL_STOCK_ON_PRODUCT_CREATED),
                  ),
                },
              ]
            : [],
        // The sweeper writes events, so it stops before the relay.
        workers: [
          createReservationSweeper({
            store,
            ttlMs: config.RESERVATION_TTL_MS,
            intervalMs: config.RESERVATION_SWEEP_INTERVAL_MS,
            batchSize: config.RESERVATION_SWEEP_BATCH,
            logger,
            registry,
          }),
        ],
      };
    },
  });
}
