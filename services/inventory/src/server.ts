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
export async function startInventory(
  config: InventoryConfig,
  overrides: RuntimeOverrides = {},
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
      publishes: ["inventory"],
    });
    try {
      const store = instrumentStore(
        createInventoryStore(data.sql, events.names),
        "inventory",
        registry,
      );
      const sweeper = createReservationSweeper({
        store,
        ttlMs: config.RESERVATION_TTL_MS,
        intervalMs: config.RESERVATION_SWEEP_INTERVAL_MS,
        batchSize: config.RESERVATION_SWEEP_BATCH,
        logger,
        registry,
      });
      // Relay, sweeper and consumer run before the listeners open, so a start that fails
      // part-way leaves no server behind; the catch below stops what did start.
      events.startRelay();
      sweeper.start();
      try {
        // Off by default: in a deployment stock arrives through SetStock, and a product
        // without a record is "unavailable", not "out of stock".
        if (config.INITIAL_STOCK_ON_PRODUCT_CREATED > 0) {
          await events.consume({
            durable: CONSUMER,
            domains: ["catalog"],
            handlers: createSubscriptions(store, BigInt(config.INITIAL_STOCK_ON_PRODUCT_CREATED)),
          });
        }
        return await serve(runtime, {
          routes: createInventoryRoutes({ store }),
          checks: [...data.checks, ...events.checks],
          // The sweeper writes events, so it stops before the relay; the relay before the pool.
          onClose: async () => {
            await sweeper.stop();
            await events.close();
            await data.close();
          },
        });
      } catch (reason) {
        await sweeper.stop();
        throw reason;
      }
    } catch (reason) {
      await events.close();
      throw reason;
    }
  } catch (reason) {
    await data.close(1);
    throw reason;
  }
}
