/**
 * Connect and gRPC-Web through the edge: generated clients over @connectrpc/connect-node
 * transports pointed at the edge, which streams the calls to catalog's HTTP (Connect) port
 * under the same token rules and access log as REST.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { CatalogService } from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_service_pb.js";
import {
  createLogSink,
  createTestIssuer,
  type LogSink,
  type TestIssuer,
} from "@meshmart/kit/testing";
import { edgeConfigSchema, type RunningEdge, startEdge } from "../src/server.js";
import { type SeededCatalog, startSeededCatalog } from "./support/seeded-catalog.js";

describe("Connect and gRPC-Web through the edge", { timeout: 60_000 }, () => {
  let catalog: SeededCatalog;
  let edge: RunningEdge;
  let issuer: TestIssuer;
  const edgeLogs: LogSink = createLogSink();

  before(async () => {
    issuer = await createTestIssuer();
    catalog = await startSeededCatalog("edge_connect", { verifier: issuer.verifier });
    edge = await startEdge(
      edgeConfigSchema.parse({
        EDGE_PORT: "0",
        CATALOG_GRPC_ADDR: catalog.host.grpcTarget,
        CATALOG_HTTP_ADDR: new URL(catalog.host.httpUrl).host,
      }),
      { verifier: issuer.verifier, logDestination: edgeLogs.stream },
    );
  });

  after(async () => {
    await edge?.close();
    await catalog?.close();
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
