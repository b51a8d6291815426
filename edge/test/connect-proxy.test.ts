/**
 * Connect, gRPC-Web and gRPC through the real Envoy edge: generated clients over
 * @connectrpc/connect-node transports pointed at the edge. Connect (JSON, binary, GET) goes
 * to catalog's Connect port untouched; gRPC-Web is turned into gRPC by Envoy's grpc_web
 * filter and goes, like gRPC, to catalog's gRPC port. The same token rules and access log
 * as REST apply to all of them.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import {
  Code,
  ConnectError,
  createClient,
  type Interceptor,
  type Transport,
} from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { CatalogService } from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_service_pb.js";
import { waitFor } from "@meshmart/kit/testing";
import { startTestEdge, type TestEdge } from "../../tests/support/envoy-edge.js";
import { NO_PORT, portsOf } from "./support/http.js";
import { type JwksIssuer, startJwksIssuer } from "./support/jwks-issuer.js";
import { type SeededCatalog, startSeededCatalog } from "./support/seeded-catalog.js";

describe("Connect, gRPC-Web and gRPC through Envoy", { timeout: 90_000 }, () => {
  let issuer: JwksIssuer;
  let catalog: SeededCatalog;
  let edge: TestEdge;

  before(async () => {
    issuer = await startJwksIssuer();
    catalog = await startSeededCatalog("edge_connect", { verifier: issuer.verifier });
    edge = await startTestEdge({
      services: new Map([
        ["catalog", portsOf(catalog.host)],
        ["identity", { grpc: NO_PORT, http: issuer.port }],
      ]),
    });
  });

  after(async () => {
    await edge?.close();
    await catalog?.close();
    await issuer?.close();
  });

  const withToken = (token: string): { interceptors: Interceptor[] } => ({
    interceptors: [
      (next) => (req) => {
        req.header.set("authorization", `Bearer ${token}`);
        return next(req);
      },
    ],
  });

  /** Each protocol, and the upstream cluster Envoy sends it to. */
  const transports: [string, string, (token?: string) => Transport][] = [
    [
      "Connect (JSON)",
      "catalog_http",
      (token) =>
        createConnectTransport({
          baseUrl: edge.url,
          httpVersion: "1.1",
          ...(token === undefined ? {} : withToken(token)),
        }),
    ],
    [
      "Connect (binary)",
      "catalog_http",
      (token) =>
        createConnectTransport({
          baseUrl: edge.url,
          httpVersion: "1.1",
          useBinaryFormat: true,
          ...(token === undefined ? {} : withToken(token)),
        }),
    ],
    [
      "Connect (GET for side-effect-free methods)",
      "catalog_http",
      (token) =>
        createConnectTransport({
          baseUrl: edge.url,
          httpVersion: "1.1",
          useHttpGet: true,
          ...(token === undefined ? {} : withToken(token)),
        }),
    ],
    [
      "gRPC-Web",
      "catalog",
      (token) =>
        createGrpcWebTransport({
          baseUrl: edge.url,
          httpVersion: "1.1",
          ...(token === undefined ? {} : withToken(token)),
        }),
    ],
    [
      "gRPC (HTTP/2 prior knowledge)",
      "catalog",
      (token) =>
        createGrpcTransport({
          baseUrl: edge.url,
          ...(token === undefined ? {} : withToken(token)),
        }),
    ],
  ];

  const code = (err: unknown) => ConnectError.from(err).code;
  /** The access log's lines of GetProduct calls so far, whatever their protocol. */
  const getProductLines = () =>
    edge
      .accessLog()
      .filter((l) => l.grpc_path?.startsWith("/meshmart.catalog.v1.CatalogService/GetProduct"));

  for (const [name, cluster, transport] of transports) {
    test(`${name}: browse, a missing product, an admin RPC without a token`, async () => {
      const seen = getProductLines().length;
      const client = createClient(CatalogService, transport());
      const list = await client.listProducts({ pageSize: 2 });
      assert.equal(list.products.length, 2);
      const first = list.products[0];
      assert.ok(first);
      const got = await client.getProduct({ productId: first.id });
      assert.equal(got.product?.id, first.id);
      // Upstream errors come back in the protocol.
      await assert.rejects(
        client.getProduct({ productId: randomUUID() }),
        (err: unknown) => code(err) === Code.NotFound,
      );
      // Envoy's own refusal (jwt_authn) too, with its reason.
      await assert.rejects(
        client.createProduct({ requestId: randomUUID(), sku: "X-1", name: "x" }),
        (err: unknown) => {
          const e = ConnectError.from(err);
          assert.equal(e.code, Code.Unauthenticated, e.message);
          assert.equal(e.rawMessage, "Jwt is missing");
          return true;
        },
      );
      const logged = await waitFor("the access log lines of both GetProduct calls", () => {
        const lines = getProductLines().slice(seen);
        return lines.length >= 2 ? lines : undefined;
      });
      assert.equal(logged.length, 2);
      for (const line of logged) {
        assert.equal(line.upstream_cluster, cluster, JSON.stringify(line));
        assert.equal(line.method, name.includes("GET") ? "GET" : "POST");
      }
    });

    test(`${name}: a customer token passes the edge; catalog answers PermissionDenied`, async () => {
      const token = await issuer.token({ roles: ["customer"] });
      const client = createClient(CatalogService, transport(token));
      await assert.rejects(
        client.createProduct({
          requestId: randomUUID(),
          sku: `EDGE-CONNECT-${randomUUID().slice(0, 8).toUpperCase()}`,
          name: "x",
          price: { currencyCode: "EUR", units: 1n, nanos: 0 },
          category: "tests",
        }),
        (err: unknown) => code(err) === Code.PermissionDenied,
      );
    });
  }

  test("an unpublished service is not reachable through the edge, in any protocol", async () => {
    const res = await fetch(`${edge.url}/meshmart.inventory.v1.InventoryService/GetStock`, {
      method: "POST",
      headers: { "content-type": "application/json", "connect-protocol-version": "1" },
      body: "{}",
    });
    assert.equal(res.status, 404);
    assert.deepEqual(await res.json(), { code: "not_found", message: "not found" });
    const web = await fetch(
      `${edge.url}/grpc.reflection.v1.ServerReflection/ServerReflectionInfo`,
      {
        method: "POST",
        headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1" },
        body: new Uint8Array(5),
      },
    );
    await web.body?.cancel();
    assert.equal(web.headers.get("grpc-status"), String(Code.Unimplemented));
  });
});
