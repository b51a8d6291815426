import { configFields, eventConfigFields, kitConfigSchema } from "@meshmart/kit";
import { z } from "zod";

/** Catalog's settings: the kit's plus its database, events, cache and demo seed. */
export const catalogConfigSchema = kitConfigSchema.extend({
  ...eventConfigFields,
  DATABASE_URL: z.string().regex(/^postgres(ql)?:\/\//, "must be a postgres:// URL"),
  REDIS_URL: z.string().regex(/^rediss?:\/\//, "must be a redis:// URL"),
  /** Product cache lifetime; also the bound on staleness if Redis misses an invalidation. */
  CACHE_TTL_MS: configFields.positiveMs.default(60_000),
  /** Prefix of every cache key, so deployments (and test runs) sharing a Redis never collide. */
  CACHE_PREFIX: z.string().max(64).default("meshmart:catalog:"),
  /** Load the demo catalog at start when the products table is empty (local `make up`). */
  SEED_DEMO: configFields.bool.default(false),
});

/** Parsed catalog settings. */
export type CatalogConfig = z.infer<typeof catalogConfigSchema>;
