import {
  createEventNames,
  createRuntime,
  instrumentStore,
  migrateEventTables,
  openServiceData,
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
 * Starts catalog: migrates its database, optionally seeds the demo catalog, and serves
 * on the configured ports (0 = free port, as tests use it). `close()` drains and releases
 * the pool and the Redis client.
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
    // TODO(events-wiring): namespace from config, relay started here.
    const names = createEventNames();
    const store = instrumentStore(createCatalogStore(data.sql, names), "catalog", registry);
    if (config.SEED_DEMO) await seedDemoCatalog(store, logger);
    const cache = createProductCache({
      redis: data.redis,
      prefix: config.CACHE_PREFIX,
      ttlMs: config.CACHE_TTL_MS,
      registry,
    });
    return await serve(runtime, {
      routes: createCatalogRoutes({ store, cache }),
      checks: data.checks,
      onClose: () => data.close(),
    });
  } catch (reason) {
    await data.close(1);
    throw reason;
  }
}
