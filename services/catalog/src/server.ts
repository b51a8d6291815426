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
import type { CatalogConfig } from "./config.js";
import { createProductCache } from "./product-cache.js";
import { createCatalogRoutes } from "./routes.js";
import { seedDemoCatalog } from "./seed.js";
import { createCatalogStore } from "./store.js";

/**
 * Starts catalog: migrates its database, optionally seeds the demo catalog, relays its
 * product events to JetStream, and serves on the configured ports (0 = free port, as tests
 * use it). `close()` drains, stops the relay and releases NATS, the pool and Redis.
 */
export async function startCatalog(
  config: CatalogConfig,
  overrides: RuntimeOverrides = {},
): Promise<ServiceHost> {
  const runtime = await createRuntime(config, overrides);
  const { logger, registry } = runtime;
  const data = await openServiceData(runtime, {
    databaseUrl: config.DATABASE_URL,
    redisUrl: config.REDIS_URL,
    migrations: new URL("../migrations/", import.meta.url),
  });
  try {
    await migrateEventTables(data.sql, logger);
    const events = await openServiceEvents(runtime, {
      sql: data.sql,
      config,
      publishes: ["catalog"],
    });
    try {
      const store = instrumentStore(
        createCatalogStore(data.sql, events.names),
        "catalog",
        registry,
      );
      if (config.SEED_DEMO) await seedDemoCatalog(store, logger);
      const cache = createProductCache({
        redis: data.redis,
        prefix: config.CACHE_PREFIX,
        ttlMs: config.CACHE_TTL_MS,
        registry,
      });
      events.startRelay();
      return await serve(runtime, {
        routes: createCatalogRoutes({ store, cache }),
        checks: [...data.checks, ...events.checks],
        // The relay stops (publishing what it can) before the pool closes.
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
