import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { LIVENESS_SERVICE } from "@meshmart/kit";
import { CatalogService } from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_service_pb.js";
import {
  createDatabase,
  createTestDatabase,
  databaseUrl,
  type OwnedPostgres,
  startOwnedPostgres,
  type TestDatabase,
  testRedisUrl,
} from "@meshmart/kit/testing";
import { service as healthServiceDefinition } from "grpc-health-check";
import { demoCatalog } from "../src/demo-catalog.js";
import { uuidFromSku } from "../src/seed.js";
import {
  bufCurl,
  type RunningCatalog,
  startTestCatalog,
  writeCatalogSchema,
} from "./support/catalog-server.js";

const SERVICE = "meshmart.catalog.v1.CatalogService";
const [demoProduct] = demoCatalog();
assert.ok(demoProduct);
const demoId = uuidFromSku(demoProduct.sku);

// The real server (startCatalog, three listeners) on port 0, seeded with the demo catalog.
describe("catalog server", () => {
  let db: TestDatabase;
  let redisUrl: string;
  let running: RunningCatalog;
  let schemaDir: string;
  let schema: string;

  before(async () => {
    [db, redisUrl, schemaDir] = await Promise.all([
      createTestDatabase("catalog_server"),
      testRedisUrl(),
      mkdtemp(join(tmpdir(), "catalog-schema-")),
    ]);
    schema = await writeCatalogSchema(schemaDir);
    running = await startTestCatalog({
      databaseUrl: db.url,
      redisUrl,
      env: { SEED_DEMO: "true" },
    });
  });
  after(async () => {
    await running?.stop();
    await db?.drop();
    if (schemaDir !== undefined) await rm(schemaDir, { recursive: true, force: true });
  });

  test("buf curl lists catalog and health methods through reflection", async () => {
    const out = await bufCurl([
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      "--list-methods",
      `http://${running.host.grpcTarget}`,
    ]);
    const methods = out.split("\n").map((l) => l.trim());
    assert.ok(methods.includes(`${SERVICE}/GetProduct`), out);
    assert.ok(methods.includes(`${SERVICE}/ListProducts`), out);
    assert.ok(methods.includes("grpc.health.v1.Health/Check"), out);
  });

  const getProduct = (baseUrl: string, ...flags: string[]) =>
    bufCurl([
      ...flags,
      "--data",
      JSON.stringify({ productId: demoId }),
      `${baseUrl}/${SERVICE}/GetProduct`,
    ]).then((out) => JSON.parse(out) as { product: { id: string; name: string; sku: string } });

  test("buf curl GetProduct over gRPC on the grpc port (schema by reflection)", async () => {
    const res = await getProduct(
      `http://${running.host.grpcTarget}`,
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
    );
    assert.deepEqual(
      { id: res.product.id, name: res.product.name, sku: res.product.sku },
      { id: demoId, name: demoProduct.name, sku: demoProduct.sku },
    );
  });

  for (const protocol of ["grpcweb", "connect"]) {
    test(`buf curl GetProduct over ${protocol} on the HTTP/1.1 port`, async () => {
      const res = await getProduct(
        running.host.httpUrl,
        "--protocol",
        protocol,
        "--schema",
        schema,
      );
      assert.equal(res.product.id, demoId);
      assert.equal(res.product.name, demoProduct.name);
    });
  }

  test("plain fetch with JSON speaks Connect on the HTTP port", async () => {
    const url = `${running.host.httpUrl}/${SERVICE}/GetProduct`;
    const post = (body: unknown) =>
      fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    const ok = await post({ productId: demoId });
    assert.equal(ok.status, 200);
    const body = (await ok.json()) as {
      product: { id: string; name: string; version: string; price: { currencyCode: string } };
    };
    assert.equal(body.product.id, demoId);
    assert.equal(body.product.name, demoProduct.name);
    assert.equal(body.product.version, "1", "int64 is a JSON string");
    assert.equal(body.product.price.currencyCode, "USD");

    const missing = await post({ productId: "00000000-0000-4000-8000-000000000000" });
    assert.equal(missing.status, 404);
    assert.equal(((await missing.json()) as { code: string }).code, "not_found");
  });

  test("the demo catalog has at least 50 products in at least 5 categories", async () => {
    const client = createClient(
      CatalogService,
      createGrpcTransport({ baseUrl: `http://${running.host.grpcTarget}` }),
    );
    const { categories } = await client.listCategories({});
    assert.ok(categories.length >= 5, `${categories.length} categories`);
    const total = categories.reduce((n, c) => n + Number(c.productCount), 0);
    assert.ok(total >= 50, `${total} products`);
    const listed = await client.listProducts({ pageSize: 100 });
    assert.equal(listed.products.length, total);
    assert.equal(listed.products.length, demoCatalog().length);
    assert.ok(running.logs.lines().some((l) => l.msg === "demo catalog seeded"));
  });

  test("another start with SEED_DEMO on the same database does not duplicate", async () => {
    // A second replica (or a restart) against the same database, while the first runs.
    const again = await startTestCatalog({
      databaseUrl: db.url,
      redisUrl,
      env: { SEED_DEMO: "true" },
    });
    try {
      const client = createClient(
        CatalogService,
        createGrpcTransport({ baseUrl: `http://${again.host.grpcTarget}` }),
      );
      const listed = await client.listProducts({ pageSize: 100 });
      assert.equal(listed.products.length, demoCatalog().length);
      const skus = listed.products.map((p) => p.sku);
      assert.equal(new Set(skus).size, skus.length);
      assert.ok(
        !again.logs.lines().some((l) => l.msg === "demo catalog seeded"),
        "nothing inserted",
      );
    } finally {
      await again.stop();
    }
  });

  test("close() resolves and releases all three ports", async () => {
    const extra = await startTestCatalog({ databaseUrl: db.url, redisUrl });
    const { grpcPort, httpPort, adminPort } = extra.host;
    const client = createClient(
      CatalogService,
      createGrpcTransport({ baseUrl: `http://${extra.host.grpcTarget}` }),
    );
    await client.getProduct({ productId: demoId });
    await extra.stop(); // host.close(), then the cache keys
    assert.ok(extra.logs.lines().some((l) => l.msg === "stopped serving"));
    for (const port of [grpcPort, httpPort, adminPort]) {
      await new Promise<void>((resolve, reject) => {
        const probe = createServer();
        probe.once("error", reject);
        probe.listen(port, "127.0.0.1", () => probe.close(() => resolve()));
      });
    }
  });
});

// grpc.health.v1 follows the one critical dependency: a Postgres this test starts and stops.
describe("health follows Postgres", () => {
  type Status = "SERVING" | "NOT_SERVING" | "UNKNOWN" | "SERVICE_UNKNOWN";
  interface HealthClient extends grpc.Client {
    Check(
      req: { service: string },
      callback: (err: grpc.ServiceError | null, res?: { status: Status }) => void,
    ): void;
    Watch(req: { service: string }): grpc.ClientReadableStream<{ status: Status }>;
  }
  const HealthClient = grpc.makeGenericClientConstructor(
    healthServiceDefinition as unknown as grpc.ServiceDefinition,
    "Health",
  ) as unknown as new (
    target: string,
    credentials: grpc.ChannelCredentials,
  ) => HealthClient;

  let owned: OwnedPostgres;
  let running: RunningCatalog;
  let health: HealthClient;

  before(async () => {
    owned = await startOwnedPostgres();
    await createDatabase(owned.url, "catalog");
    running = await startTestCatalog({
      databaseUrl: databaseUrl(owned.url, "catalog"),
      redisUrl: await testRedisUrl(),
      // Production probe interval (1 s): the 5 s bound below holds for real settings.
      env: { SEED_DEMO: "true", HEALTH_INTERVAL_MS: "1000" },
    });
    health = new HealthClient(running.host.grpcTarget, grpc.credentials.createInsecure());
  });
  after(async () => {
    health?.close();
    await running?.stop();
    await owned?.dispose();
  });

  /** Watch statuses as they arrive, with a way to wait for the next one of a kind. */
  function watch(service: string) {
    const seen: Status[] = [];
    const waiters: { status: Status; from: number; resolve: () => void }[] = [];
    const call = health.Watch({ service });
    call.on("data", ({ status }) => {
      seen.push(status);
      for (const w of [...waiters]) {
        if (seen.indexOf(w.status, w.from) >= 0) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve();
        }
      }
    });
    call.on("error", () => {});
    return {
      seen,
      cancel: () => call.cancel(),
      /** Resolves when `status` arrives at or after position `from`; rejects after `timeoutMs`. */
      until(status: Status, from: number, timeoutMs: number): Promise<void> {
        if (seen.indexOf(status, from) >= 0) return Promise.resolve();
        return new Promise((resolve, reject) => {
          const timer = setTimeout(
            () => reject(new Error(`no ${status} within ${timeoutMs} ms (saw ${seen})`)),
            timeoutMs,
          );
          waiters.push({
            status,
            from,
            resolve: () => {
              clearTimeout(timer);
              resolve();
            },
          });
        });
      },
    };
  }

  const check = (service: string) =>
    new Promise<Status>((resolve, reject) =>
      health.Check({ service }, (err, res) =>
        err ? reject(err) : resolve(res?.status ?? "UNKNOWN"),
      ),
    );
  const bothChecks = async () => [await check(""), await check(SERVICE)];
  const readyStatus = async () => (await fetch(`${running.host.adminUrl}/readyz`)).status;

  test("Watch: SERVING, NOT_SERVING within 5 s of losing Postgres, SERVING once it is back", async () => {
    const overall = watch("");
    const catalog = watch(SERVICE);
    try {
      await Promise.all([overall.until("SERVING", 0, 2_000), catalog.until("SERVING", 0, 2_000)]);
      assert.deepEqual(await bothChecks(), ["SERVING", "SERVING"]);
      assert.equal(await readyStatus(), 200);

      const mark = overall.seen.length;
      const markCatalog = catalog.seen.length;
      const stopped = Date.now();
      await owned.stop();
      await Promise.all([
        overall.until("NOT_SERVING", mark, 5_000),
        catalog.until("NOT_SERVING", markCatalog, 5_000),
      ]);
      const elapsed = Date.now() - stopped;
      assert.ok(elapsed < 5_000, `NOT_SERVING after ${elapsed} ms`);
      assert.deepEqual(await bothChecks(), ["NOT_SERVING", "NOT_SERVING"]);
      assert.equal(await readyStatus(), 503);
      // Liveness is about the process, not its database: no restart for an outage.
      assert.equal(await check(LIVENESS_SERVICE), "SERVING");

      const down = overall.seen.length;
      const downCatalog = catalog.seen.length;
      await owned.start();
      await Promise.all([
        overall.until("SERVING", down, 10_000),
        catalog.until("SERVING", downCatalog, 10_000),
      ]);
      assert.deepEqual(await bothChecks(), ["SERVING", "SERVING"]);
      assert.equal(await readyStatus(), 200);
      // Each transition was reported once, in order, on both names.
      assert.deepEqual(overall.seen, ["SERVING", "NOT_SERVING", "SERVING"]);
      assert.deepEqual(catalog.seen, ["SERVING", "NOT_SERVING", "SERVING"]);

      // And the pool recovered: RPCs reach the restarted database.
      const client = createClient(
        CatalogService,
        createGrpcTransport({ baseUrl: `http://${running.host.grpcTarget}` }),
      );
      const { product } = await client.getProduct({ productId: demoId });
      assert.equal(product?.name, demoProduct.name);
    } finally {
      overall.cancel();
      catalog.cancel();
    }
  });
});
