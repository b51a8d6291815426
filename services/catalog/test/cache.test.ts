import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { toBinary } from "@bufbuild/protobuf";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { ProductSchema } from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_pb.js";
import { CatalogService } from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_service_pb.js";
import { createTestDatabase, freePort, type TestDatabase } from "@meshmart/kit/testing";
import { demoCatalog } from "../src/demo-catalog.js";
import { uuidFromSku } from "../src/seed.js";
import { type CatalogFixture, createCatalogFixture, rejection } from "./support/catalog-fixture.js";
import { type RunningCatalog, startTestCatalog } from "./support/catalog-server.js";
import { createTestIssuer } from "./support/kit-testing.js";

// Cache-aside on a real Redis: what is served from where, and that no stale write wins.
describe("product cache on Redis", () => {
  let f: CatalogFixture;
  before(async () => {
    f = await createCatalogFixture("catalog_cache");
  });
  after(() => f?.close());

  /** cache_lookups_total{result} as counted so far. */
  async function lookups(): Promise<Record<string, number>> {
    const metric = f.registry.getSingleMetric("cache_lookups_total");
    assert.ok(metric, "cache_lookups_total registered");
    const counts: Record<string, number> = { hit: 0, miss: 0, deleted: 0, error: 0 };
    for (const v of (await metric.get()).values) counts[String(v.labels.result)] = v.value;
    return counts;
  }

  /** Runs `fn` and returns how each lookup counter moved meanwhile. */
  async function counting(fn: () => Promise<unknown>): Promise<Record<string, number>> {
    const start = await lookups();
    await fn();
    const end = await lookups();
    return Object.fromEntries(Object.keys(end).map((k) => [k, (end[k] ?? 0) - (start[k] ?? 0)]));
  }

  async function newProduct(name: string) {
    const { product } = await f.client.createProduct(
      {
        requestId: randomUUID(),
        sku: `CCH-${randomUUID().slice(0, 8).toUpperCase()}`,
        name,
        category: "cache",
        price: { currencyCode: "EUR", units: 5n },
      },
      f.admin,
    );
    assert.ok(product);
    return product;
  }

  /** Renames the row behind the service's back: no version bump, no cache update. */
  const renameInPostgres = (id: string, name: string) =>
    f.sql`update products set name = ${name} where id = ${id}`;

  test("the first read is a miss that fills the cache; the next is a hit", async () => {
    const product = await newProduct("Cached Grinder");
    assert.equal(await f.redis.exists(f.cacheKey(product.id)), 0, "create does not fill the cache");

    const first = await counting(() => f.client.getProduct({ productId: product.id }));
    assert.deepEqual(first, { hit: 0, miss: 1, deleted: 0, error: 0 });
    const raw = await f.redis.getBuffer(f.cacheKey(product.id));
    assert.ok(raw, "entry written");
    assert.equal(raw.subarray(0, 2).toString(), "1|", "entry carries version 1");
    const ttl = await f.redis.pttl(f.cacheKey(product.id));
    assert.ok(ttl > 0 && ttl <= 60_000, `entry expires (pttl ${ttl})`);

    const second = await counting(() => f.client.getProduct({ productId: product.id }));
    assert.deepEqual(second, { hit: 1, miss: 0, deleted: 0, error: 0 });
  });

  test("reads are served from the cache until an update refreshes the entry", async () => {
    const product = await newProduct("Original Name");
    await f.client.getProduct({ productId: product.id });

    // Postgres now says otherwise, but the cached entry is what is served.
    await renameInPostgres(product.id, "Changed Behind The Cache");
    const cached = await f.client.getProduct({ productId: product.id });
    assert.equal(cached.product?.name, "Original Name");

    const updated = await f.client.updateProduct(
      { product: { id: product.id, name: "Renamed Via API" }, updateMask: { paths: ["name"] } },
      f.admin,
    );
    assert.equal(updated.product?.version, 2n);
    // And again behind its back: the read after the update must come from the refreshed entry.
    await renameInPostgres(product.id, "Changed Again Behind The Cache");
    const delta = await counting(async () => {
      const read = await f.client.getProduct({ productId: product.id });
      assert.equal(read.product?.name, "Renamed Via API");
      assert.equal(read.product?.version, 2n);
    });
    assert.deepEqual(delta, { hit: 1, miss: 0, deleted: 0, error: 0 });
    const raw = await f.redis.getBuffer(f.cacheKey(product.id));
    assert.equal(raw?.subarray(0, 2).toString(), "2|");
  });

  test("a reader's stale put never overwrites a newer entry", async () => {
    const product = await newProduct("Version One");
    const updated = await f.client.updateProduct(
      { product: { id: product.id, name: "Version Two" }, updateMask: { paths: ["name"] } },
      f.admin,
    );
    // A reader that loaded version 1 before the update now writes it back.
    await f.cache.put(product.id, 1n, toBinary(ProductSchema, product));
    const read = await f.client.getProduct({ productId: product.id });
    assert.equal(read.product?.name, "Version Two");
    assert.equal(read.product?.version, updated.product?.version);
  });

  test("delete leaves a tombstone that refuses a stale put of an older version", async () => {
    const product = await newProduct("Doomed Scale");
    const { product: v2 } = await f.client.updateProduct(
      { product: { id: product.id, name: "Doomed Scale II" }, updateMask: { paths: ["name"] } },
      f.admin,
    );
    assert.ok(v2);
    await f.client.getProduct({ productId: product.id });
    await f.client.deleteProduct({ productId: product.id }, f.admin);

    const raw = await f.redis.getBuffer(f.cacheKey(product.id));
    assert.equal(raw?.toString(), "3|", "tombstone one version past the deleted row");

    // A reader that loaded version 2 just before the delete writes it now: refused.
    await f.cache.put(product.id, 2n, toBinary(ProductSchema, v2));
    assert.equal((await f.redis.getBuffer(f.cacheKey(product.id)))?.toString(), "3|");

    const delta = await counting(async () => {
      const err = await rejection(f.client.getProduct({ productId: product.id }));
      assert.equal(err.code, Code.NotFound);
    });
    assert.deepEqual(delta, { hit: 0, miss: 0, deleted: 1, error: 0 });
  });
});

// Redis is only a cache: without it the service answers from Postgres and says it is degraded.
describe("catalog with Redis unreachable", () => {
  let db: TestDatabase;
  let running: RunningCatalog;
  let admin: { headers: Record<string, string> };

  before(async () => {
    const [database, closedPort, issuer] = await Promise.all([
      createTestDatabase("catalog_noredis"),
      freePort(),
      createTestIssuer(),
    ]);
    db = database;
    admin = { headers: { authorization: `Bearer ${await issuer.token({ roles: ["admin"] })}` } };
    running = await startTestCatalog({
      databaseUrl: db.url,
      // Nothing listens there: every Redis command fails at once.
      redisUrl: `redis://127.0.0.1:${closedPort}`,
      issuer,
      env: { SEED_DEMO: "true", HEALTH_INTERVAL_MS: "200" },
    });
  });
  after(async () => {
    await running?.stop();
    await db?.drop();
  });

  const client = () =>
    createClient(
      CatalogService,
      createConnectTransport({ baseUrl: running.host.httpUrl, httpVersion: "1.1" }),
    );

  test("GetProduct answers from Postgres, repeatedly", async () => {
    const [first] = demoCatalog();
    assert.ok(first);
    const productId = uuidFromSku(first.sku);
    for (let i = 0; i < 3; i++) {
      const { product } = await client().getProduct({ productId }, { timeoutMs: 3_000 });
      assert.equal(product?.name, first.name);
    }
    const metrics = await (await fetch(`${running.host.adminUrl}/metrics`)).text();
    const errors = /cache_lookups_total\{[^}]*result="error"[^}]*\} (\d+)/.exec(metrics);
    assert.ok(errors && Number(errors[1]) >= 3, `lookups counted as errors: ${errors?.[0]}`);
  });

  test("writes succeed too, and the next read sees them", async () => {
    const { product } = await client().createProduct(
      {
        requestId: randomUUID(),
        sku: "NOREDIS-1",
        name: "Offline Filter",
        category: "brewing",
        price: { currencyCode: "EUR", units: 3n },
      },
      admin,
    );
    assert.ok(product);
    await client().updateProduct(
      { product: { id: product.id, name: "Offline Filter v2" }, updateMask: { paths: ["name"] } },
      admin,
    );
    const read = await client().getProduct({ productId: product.id });
    assert.equal(read.product?.name, "Offline Filter v2");
  });

  test("/readyz is SERVING and degraded, with redis down", async () => {
    // startCatalog resolves after the first health round, so the verdict is settled now.
    const res = await fetch(`${running.host.adminUrl}/readyz`);
    assert.equal(res.status, 200);
    const report = (await res.json()) as {
      status: string;
      degraded: boolean;
      checks: Record<string, { ok: boolean }>;
    };
    assert.equal(report.status, "SERVING");
    assert.equal(report.degraded, true);
    assert.equal(report.checks.redis?.ok, false);
    assert.equal(report.checks.postgres?.ok, true);
  });
});
