/**
 * REST contract of the edge, edge-agnostic: with EDGE_URL set it runs against that edge
 * (Envoy, or a `make up` stack seeded with the demo catalog; token-dependent cases then need
 * EDGE_TEST_ADMIN_TOKEN / EDGE_TEST_CUSTOMER_TOKEN, else they are skipped). Without it,
 * it starts a real catalog (port 0, test database, Redis, demo seed) and the local edge,
 * both verifying tokens against a JWKS served here over HTTP.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { createLogSink, type LogSink } from "@meshmart/kit/testing";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { edgeConfigSchema, type RunningEdge, startEdge } from "../src/server.js";
import { type SeededCatalog, startSeededCatalog } from "./support/seeded-catalog.js";

const external = process.env.EDGE_URL;

/** A JSON answer, typed loosely for assertions (a Status or one of the responses used here). */
interface Body {
  code?: number;
  message?: string;
  details?: {
    "@type"?: string;
    violations?: { field?: { elements?: { fieldName?: string }[] } }[];
  }[];
  products?: { id: string; price: { currencyCode: string } }[];
  nextPageToken?: string;
  product?: { id: string; name: string; price: { units: string } };
  categories?: unknown[];
  upstreams?: Record<string, string>;
}

interface Issuer {
  jwksUrl: string;
  token(roles: string[]): Promise<string>;
  close(): Promise<void>;
}

/** An ES256 key whose JWKS is served over HTTP, like identity's. */
async function startIssuer(): Promise<Issuer> {
  const { privateKey, publicKey } = await generateKeyPair("ES256");
  const kid = `k-${randomUUID()}`;
  const jwks = JSON.stringify({
    keys: [{ ...(await exportJWK(publicKey)), kid, alg: "ES256", use: "sig" }],
  });
  const server: Server = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" }).end(jwks);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return {
    jwksUrl: `http://127.0.0.1:${port}/.well-known/jwks.json`,
    token: (roles) =>
      new SignJWT({ email: "t@example.com", roles })
        .setProtectedHeader({ alg: "ES256", kid })
        .setSubject(randomUUID())
        .setIssuer("meshmart-identity")
        .setAudience("meshmart")
        .setIssuedAt()
        .setExpirationTime("5m")
        .sign(privateKey),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe("REST contract", { timeout: 120_000 }, () => {
  let base: string;
  let adminToken: string | undefined;
  let customerToken: string | undefined;
  let issuer: Issuer | undefined;
  let catalog: SeededCatalog | undefined;
  let edge: RunningEdge | undefined;
  const edgeLogs: LogSink = createLogSink();

  before(async () => {
    if (external !== undefined) {
      base = external.replace(/\/$/, "");
      adminToken = process.env.EDGE_TEST_ADMIN_TOKEN;
      customerToken = process.env.EDGE_TEST_CUSTOMER_TOKEN;
      return;
    }
    issuer = await startIssuer();
    catalog = await startSeededCatalog("edge_contract", { jwksUrl: issuer.jwksUrl });
    edge = await startEdge(
      edgeConfigSchema.parse({
        EDGE_PORT: "0",
        CATALOG_GRPC_ADDR: catalog.host.grpcTarget,
        AUTH_JWKS_URL: issuer.jwksUrl,
        EDGE_MAX_BODY_BYTES: String(64 * 1024),
        EDGE_CORS_ORIGINS: "https://shop.example",
      }),
      { logDestination: edgeLogs.stream },
    );
    base = edge.url;
    [adminToken, customerToken] = await Promise.all([
      issuer.token(["admin"]),
      issuer.token(["customer"]),
    ]);
  });

  after(async () => {
    await edge?.close();
    await catalog?.close();
    await issuer?.close();
  });

  const call = async (
    method: string,
    path: string,
    init: { body?: string; token?: string | undefined; headers?: Record<string, string> } = {},
  ) => {
    const headers: Record<string, string> = { ...init.headers };
    if (init.body !== undefined) headers["content-type"] = "application/json";
    if (init.token !== undefined) headers.authorization = `Bearer ${init.token}`;
    const res = await fetch(`${base}${path}`, {
      method,
      headers,
      ...(init.body === undefined ? {} : { body: init.body }),
    });
    const text = await res.text();
    let json: unknown;
    try {
      json = text === "" ? undefined : JSON.parse(text);
    } catch {
      json = text;
    }
    return { status: res.status, headers: res.headers, json: (json ?? {}) as Body };
  };

  /** Asserts a google.rpc.Status body with this code. */
  const assertStatus = (json: Body, code: number) => {
    assert.equal(json.code, code, JSON.stringify(json));
    assert.equal(typeof json.message, "string");
  };

  let firstId: string;

  test("GET /v1/products?page_size=2 → 2 products and nextPageToken", async () => {
    const { status, json, headers } = await call("GET", "/v1/products?page_size=2");
    assert.equal(status, 200, JSON.stringify(json));
    assert.match(headers.get("content-type") ?? "", /application\/json/);
    const [first] = json.products ?? [];
    assert.equal(json.products?.length, 2);
    assert.ok(json.nextPageToken !== undefined && json.nextPageToken.length > 0);
    assert.ok(first);
    firstId = first.id;
    assert.ok(first.price.currencyCode, "camelCase JSON names");
    const next = await call(
      "GET",
      `/v1/products?page_size=2&page_token=${encodeURIComponent(json.nextPageToken)}`,
    );
    assert.equal(next.status, 200);
    assert.notEqual(next.json.products?.[0]?.id, firstId);
  });

  test("GET /v1/products/{id} → the product", async () => {
    const { status, json } = await call("GET", `/v1/products/${firstId}`);
    assert.equal(status, 200, JSON.stringify(json));
    assert.equal(json.product?.id, firstId);
  });

  test("unknown id → 404 google.rpc.Status", async () => {
    const { status, json } = await call("GET", `/v1/products/${randomUUID()}`);
    assert.equal(status, 404);
    assertStatus(json, 5);
  });

  test("bad uuid → 400 with buf.validate.Violations naming product_id", async () => {
    const { status, json } = await call("GET", "/v1/products/not-a-uuid");
    assert.equal(status, 400);
    assertStatus(json, 3);
    const detail = json.details?.find(
      (d) => d["@type"] === "type.googleapis.com/buf.validate.Violations",
    );
    assert.ok(detail, JSON.stringify(json));
    const names = (detail.violations ?? []).flatMap((v) =>
      (v.field?.elements ?? []).map((e) => e.fieldName),
    );
    assert.ok(names.includes("product_id"), JSON.stringify(detail));
  });

  const newProduct = () =>
    JSON.stringify({
      requestId: randomUUID(),
      sku: `EDGE-${randomUUID().slice(0, 8).toUpperCase()}`,
      name: "Edge test product",
      price: { currencyCode: "EUR", units: "12", nanos: 500000000 },
      category: "tests",
    });

  test("POST /v1/products without a token → 401 with a Bearer challenge", async () => {
    const { status, json, headers } = await call("POST", "/v1/products", { body: newProduct() });
    assert.equal(status, 401);
    assertStatus(json, 16);
    assert.match(headers.get("www-authenticate") ?? "", /^Bearer/);
  });

  test("POST /v1/products with a forged token → 401", async () => {
    const { status } = await call("POST", "/v1/products", {
      body: newProduct(),
      token: "eyJhbGciOiJFUzI1NiJ9.e30.AAAA",
    });
    assert.equal(status, 401);
  });

  test("POST /v1/products with a customer token → 403", {
    skip: skipWithout("customer"),
  }, async () => {
    const { status, json } = await call("POST", "/v1/products", {
      body: newProduct(),
      token: customerToken,
    });
    assert.equal(status, 403, JSON.stringify(json));
    assertStatus(json, 7);
  });

  test("POST /v1/products with an admin token → 200", { skip: skipWithout("admin") }, async () => {
    const { status, json } = await call("POST", "/v1/products", {
      body: newProduct(),
      token: adminToken,
    });
    assert.equal(status, 200, JSON.stringify(json));
    assert.equal(json.product?.name, "Edge test product");
    assert.equal(json.product?.price.units, "12");
  });

  test("malformed JSON → 400", { skip: skipWithout("admin") }, async () => {
    const { status, json } = await call("POST", "/v1/products", {
      body: '{"name": ',
      token: adminToken,
    });
    assert.equal(status, 400);
    assertStatus(json, 3);
  });

  test("unknown JSON field → 400", { skip: skipWithout("admin") }, async () => {
    const body = JSON.stringify({ ...JSON.parse(newProduct()), colour: "red" });
    const { status, json } = await call("POST", "/v1/products", { body, token: adminToken });
    assert.equal(status, 400);
    assertStatus(json, 3);
  });

  test("body over the limit → 413", { skip: skipWithout("admin") }, async () => {
    const huge = JSON.stringify({ name: "x".repeat(2 * 1024 * 1024) });
    const { status } = await call("POST", "/v1/products", { body: huge, token: adminToken });
    assert.equal(status, 413);
  });

  test("unknown path → 404", async () => {
    const { status, json } = await call("GET", "/v1/nothing-here");
    assert.equal(status, 404);
    assertStatus(json, 5);
  });

  test("wrong method → 405", async () => {
    const { status, headers } = await call("PUT", "/v1/products");
    assert.equal(status, 405);
    assert.match(headers.get("allow") ?? "", /GET/);
  });

  test("unknown query parameter → 400", async () => {
    const { status } = await call("GET", "/v1/products?colour=red");
    assert.equal(status, 400);
  });

  test("x-request-id is echoed back", async () => {
    const { headers } = await call("GET", "/v1/categories", {
      headers: { "x-request-id": "req-42" },
    });
    assert.equal(headers.get("x-request-id"), "req-42");
  });

  test("the edge keeps serving after all of the above", async () => {
    const { status, json } = await call("GET", "/v1/categories");
    assert.equal(status, 200);
    assert.ok(Array.isArray(json.categories) && json.categories.length > 0);
  });

  describe("local edge only", { skip: external !== undefined }, () => {
    test("/healthz and /readyz", async () => {
      assert.equal((await call("GET", "/healthz")).status, 200);
      const ready = await call("GET", "/readyz");
      assert.equal(ready.status, 200, JSON.stringify(ready.json));
      assert.deepEqual(ready.json.upstreams, { catalog: "SERVING" });
    });

    test("CORS preflight from an allowed origin → 204", async () => {
      const res = await fetch(`${base}/v1/products`, {
        method: "OPTIONS",
        headers: { origin: "https://shop.example", "access-control-request-method": "POST" },
      });
      assert.equal(res.status, 204);
      assert.equal(res.headers.get("access-control-allow-origin"), "https://shop.example");
      const other = await fetch(`${base}/v1/products`, {
        headers: { origin: "https://evil.example" },
      });
      assert.equal(other.headers.get("access-control-allow-origin"), null);
    });

    test("unreachable upstream → 503 without internal addresses", async () => {
      const probe = createServer();
      probe.listen(0, "127.0.0.1");
      await once(probe, "listening");
      const deadPort = (probe.address() as AddressInfo).port;
      await new Promise<void>((resolve) => probe.close(() => resolve()));
      const lonely = await startEdge(
        edgeConfigSchema.parse({ EDGE_PORT: "0", IDENTITY_GRPC_ADDR: `127.0.0.1:${deadPort}` }),
        { logDestination: createLogSink().stream },
      );
      try {
        const res = await fetch(`${lonely.url}/v1/sessions`, { method: "POST", body: "{}" });
        assert.equal(res.status, 503);
        assert.deepEqual(await res.json(), { code: 14, message: "upstream connect error" });
      } finally {
        await lonely.close();
      }
    });

    test("upstream without a configured address → 503", async () => {
      const { status, json } = await call("GET", "/v1/orders", { token: customerToken });
      assert.equal(status, 503);
      assertStatus(json, 14);
    });

    test("upstream timeout → 504, unreachable upstream → 503", async () => {
      const probe = createServer();
      probe.listen(0, "127.0.0.1");
      await once(probe, "listening");
      const deadPort = (probe.address() as AddressInfo).port;
      await new Promise<void>((resolve) => probe.close(() => resolve()));
      const strict = await startEdge(
        edgeConfigSchema.parse({
          EDGE_PORT: "0",
          CATALOG_GRPC_ADDR: catalog?.host.grpcTarget,
          IDENTITY_GRPC_ADDR: `127.0.0.1:${deadPort}`,
          EDGE_REQUEST_TIMEOUT_MS: "1",
        }),
        { logDestination: createLogSink().stream },
      );
      try {
        const slow = await fetch(`${strict.url}/v1/products?page_size=100&query=zzz`);
        assert.equal(slow.status, 504);
        assert.equal(((await slow.json()) as { code: number }).code, 4);
        const down = await fetch(`${strict.url}/v1/sessions`, { method: "POST", body: "{}" });
        assert.ok(down.status === 503 || down.status === 504, String(down.status));
        const ready = await fetch(`${strict.url}/readyz`);
        assert.equal(ready.status, 503);
      } finally {
        await strict.close();
      }
    });

    test("access log: one line per request, no bodies or tokens", () => {
      const lines = edgeLogs.lines().filter((l) => l.msg === "access");
      assert.ok(lines.length >= 15);
      const created = lines.find((l) => l.method === "POST" && l.status === 200);
      assert.ok(created);
      assert.equal(created.upstream, "catalog");
      assert.equal(typeof created.request_id, "string");
      assert.equal(typeof created.duration_ms, "number");
      const text = edgeLogs.text();
      assert.ok(adminToken !== undefined && !text.includes(adminToken));
      assert.ok(!text.includes("Edge test product"));
    });
  });

  function skipWithout(role: "admin" | "customer"): boolean | string {
    if (external === undefined) return false;
    const have =
      role === "admin" ? process.env.EDGE_TEST_ADMIN_TOKEN : process.env.EDGE_TEST_CUSTOMER_TOKEN;
    return have === undefined ? `EDGE_TEST_${role.toUpperCase()}_TOKEN not set` : false;
  }
});
