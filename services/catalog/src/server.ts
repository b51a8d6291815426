import {
  createPageTokens,
  instrumentStore,
  type RuntimeOverrides,
  type ServiceHost,
  startService,
} from "@meshmart/kit";
import { ListProductsRequestSchema } from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_service_pb.js";
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
export function startCatalog(
  config: CatalogConfig,
  overrides: RuntimeOverrides = {},
): Promise<ServiceHost> {
  return startService(config, overrides, {
    migrations: new URL("../migrations/", import.meta.url),
    publishes: ["catalog"],
    build: async ({ runtime, data, events }) => {
      const { logger, registry } = runtime;
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
      const pageTokens = createPageTokens(
        runtime.pageTokenKey(),
        ListProductsRequestSchema.field.pageToken,
      );
      return { routes: createCatalogRoutes({ store, cache, pageTokens }) };
    },
  });
}
