import { randomBytes, randomUUID } from "node:crypto";
import { type CallOptions, type Client, createClient } from "@connectrpc/connect";
import { createEventNames, createPageTokens, createRedis, type Sql } from "@meshmart/kit";
import {
  CatalogService,
  ListProductsRequestSchema,
} from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_service_pb.js";
import { deleteKeys, type TestDatabase, testRedisUrl, uniqueName } from "@meshmart/kit/testing";
import { Redis } from "ioredis";
import type { Registry } from "prom-client";
import { createProductCache, type ProductCache } from "../../src/product-cache.js";
import { createCatalogRoutes } from "../../src/routes.js";
import { type CatalogStore, createCatalogStore, type NewProduct } from "../../src/store.js";
import {
  bearer,
  createTestIssuer,
  createTestTransport,
  type LogSink,
  openServiceTestDatabase,
} from "./kit-testing.js";

/** Catalog's migrations folder. */
export const migrationsDir = new URL("../../migrations/", import.meta.url);

/** A unique Redis key prefix for one test run, so runs sharing a Redis never collide. */
export function uniqueCachePrefix(label: string): string {
  return `${uniqueName(label)}:`;
}

/**
 * Catalog's handlers wired exactly as `startCatalog` wires them (store, cache, routes),
 * served in memory through the production interceptor chain, over a fresh database and a
 * run-unique Redis prefix. `close()` releases everything and drops the database.
 */
export interface CatalogFixture {
  client: Client<typeof CatalogService>;
  /** The catalog's own pool, for arranging and checking rows behind the API. */
  sql: Sql;
  store: CatalogStore;
  cache: ProductCache;
  /** The registry the cache counts into. */
  registry: Registry;
  /** A separate Redis connection for reading the cache's keys directly. */
  redis: Redis;
  prefix: string;
  db: TestDatabase;
  logs: LogSink;
  /** Call options carrying a bearer token with role admin / role customer. */
  admin: CallOptions;
  customer: CallOptions;
  /** The cache key of a product. */
  cacheKey(productId: string): string;
  close(): Promise<void>;
}

export async function createCatalogFixture(label: string): Promise<CatalogFixture> {
  const [database, redisUrl, issuer] = await Promise.all([
    openServiceTestDatabase({ label, service: "catalog", migrations: migrationsDir }),
    testRedisUrl(),
    createTestIssuer(),
  ]);
  const { db, sql, logger, logs, registry } = database;
  const prefix = uniqueCachePrefix(label);
  const serviceRedis = createRedis({ url: redisUrl, logger });
  const redis = new Redis(redisUrl, { lazyConnect: true });
  try {
    await redis.connect();
  } catch (reason) {
    serviceRedis.disconnect();
    redis.disconnect();
    await database.close();
    throw reason;
  }
  const store = createCatalogStore(sql, createEventNames());
  const cache = createProductCache({ redis: serviceRedis, prefix, ttlMs: 60_000, registry });
  const pageTokens = createPageTokens(randomBytes(32), ListProductsRequestSchema.field.pageToken);
  const { transport } = createTestTransport(createCatalogRoutes({ store, cache, pageTokens }), {
    verifier: issuer.verifier,
  });
  const [admin, customer] = await Promise.all([
    bearer(issuer, ["admin"]),
    bearer(issuer, ["customer"]),
  ]);
  return {
    client: createClient(CatalogService, transport),
    sql,
    store,
    cache,
    registry,
    redis,
    prefix,
    db,
    logs,
    admin,
    customer,
    cacheKey: (productId) => `${prefix}product:${productId}`,
    async close() {
      await deleteKeys(redis, prefix);
      redis.disconnect();
      serviceRedis.disconnect();
      await database.close();
    },
  };
}

/** A product row to insert directly (bypassing the API), with sensible defaults. */
export function productRow(overrides: Partial<NewProduct> & { sku: string }): NewProduct {
  return {
    id: randomUUID(),
    name: `Product ${overrides.sku}`,
    description: "",
    category: "misc",
    image_url: "",
    price_currency: "EUR",
    price_units: 10n,
    price_nanos: 0,
    ...overrides,
  };
}

export { rejection, violationsOf } from "@meshmart/kit/testing";
export { deleteKeys };
