/**
 * Connect and gRPC-Web through the edge: generated clients over @connectrpc/connect-node
 * transports pointed at the edge, which streams the calls to catalog's HTTP (Connect) port
 * under the same token rules and access log as REST.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { startCatalog } from "@meshmart/catalog";
import { catalogConfigSchema } from "@meshmart/catalog/config";
import { loadConfig, type ServiceHost } from "@meshmart/kit";
import { CatalogService } from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_service_pb.js";
import {
  createLogSink,
  createTestDatabase,
  createTestIssuer,
  type LogSink,
  openTestEvents,
  type TestDatabase,
  type TestEvents,
  type TestIssuer,
  testRedisUrl,
  uniqueName,
} from "@meshmart/kit/testing";
import { edgeConfigSchema, type RunningEdge, startEdge } from "../src/server.js";

describe("Connect and gRPC-Web through the edge", { timeout: 60_000 }, () => {
  let db: TestDatabase;
  let catalog: ServiceHost;
  let edge: RunningEdge;
  let issuer: TestIssuer;
  const edgeLogs: LogSink = createLogSink();

  let events: TestEvents;
  before(async () => {
    events = await openTestEvents("edge_proxy");
    let redisUrl: string;
    [db, redisUrl, issuer] = await Promise.all([
      createTestDatabase("edge_connect"),
      testRedisUrl(),
      createTestIssuer(),
    ]);
    const config = loadConfig(catalogConfigSchema, {
      SERVICE_NAME: "catalog",
      GRPC_PORT: "0",
      HTTP_PORT: "0",
      ADMIN_PORT: "0",
      LOG_LEVEL: "warn",
      DATABASE_URL: db.url,
      REDIS_URL: redisUrl,
      ...events.env,
      CACHE_PREFIX: `${uniqueName("edge_connect")}:`,
      SEED_DEMO: "true",
    });
    catalog = await startCatalog(config, {
      verifier: issuer.verifier,
      logDestination: createLogSink().stream,
    });
    edge = await startEdge(
      edgeConfigSchema.parse({
        EDGE_PORT: "0",
        CATALOG_GRPC_ADDR: catalog.grpcTarget,
        CATALOG_HTTP_ADDR: new URL(catalog.httpUrl).host,
      }),
      { verifier: issuer.verifier, logDestination: edgeLogs.stream },
    );
  });

  after(async () => {
    await edge?.close();
    await catalog?.close();
    await db?.drop();
    await events?.close();
  });

  const transports: [string, () => Transport][] = [
    ["Connect (JSON)", () => createConnectTransport({ baseUrl: edge.url, httpVersion: "1.1" })],
    [
      "Connect (binary)",
      () =>
        createConnectTransport({ baseUrl: edge.url, httpVersion: "1.1", useBinaryFormat: true }),
    ],
    ["gRPC-Web", () => createGrpcWebTransport({ baseUrl: edge.url, httpVersion: "1.1" })],
  ];

  for (const [name, transport] of transports) {
    test(`${name}: ListProducts, GetProduct, admin RPC without a token`, async () => {
      const client = createClient(CatalogService, transport());
      const list = await client.listProducts({ pageSize: 2 });
      assert.equal(list.products.length, 2);
      const first = list.products[0];
      assert.ok(first);
      const got = await client.getProduct({ productId: first.id });
      assert.equal(got.product?.id, first.id);
      await assert.rejects(
        client.createProduct({ requestId: crypto.randomUUID(), sku: "X-1", name: "x" }),
        (err: unknown) => ConnectError.from(err).code === Code.Unauthenticated,
      );
      // Upstream errors come back in the protocol too.
      await assert.rejects(
        client.getProduct({ productId: crypto.randomUUID() }),
        (err: unknown) => ConnectError.from(err).code === Code.NotFound,
      );
    });
  }

  test("a customer token passes the edge; catalog answers PermissionDenied", async () => {
    const token = await issuer.token({ roles: ["customer"] });
    const client = createClient(
      CatalogService,
      createConnectTransport({
        baseUrl: edge.url,
        httpVersion: "1.1",
        interceptors: [
          (next) => (req) => {
            req.header.set("authorization", `Bearer ${token}`);
            return next(req);
          },
        ],
      }),
    );
    await assert.rejects(
      client.createProduct({
        requestId: crypto.randomUUID(),
        sku: "EDGE-CONNECT-2",
        name: "x",
        price: { currencyCode: "EUR", units: 1n, nanos: 0 },
        category: "tests",
      }),
      (err: unknown) => ConnectError.from(err).code === Code.PermissionDenied,
    );
  });

  test("REST still served; access log covers RPC calls", async () => {
    const res = await fetch(`${edge.url}/v1/categories`);
    assert.equal(res.status, 200);
    const rpc = edgeLogs
      .lines()
      .filter(
        (l) => l.msg === "access" && l.path === "/meshmart.catalog.v1.CatalogService/GetProduct",
      );
    assert.ok(rpc.length >= 3);
    assert.ok(rpc.every((l) => l.upstream === "catalog"));
  });
});
