/**
 * The REST contract as Envoy serves it: a real catalog (test database, demo seed) behind the
 * real Envoy edge, tokens signed by a stand-in for identity whose JWKS Envoy's jwt_authn
 * fetches over HTTP. Status codes, google.rpc.Status bodies, JWT per route, CORS, request
 * ids and the access log.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { waitFor } from "@meshmart/kit/testing";
import { startTestEdge, type TestEdge } from "../../tests/support/envoy-edge.js";
import { type CallInit, call as callAt, NO_PORT, portsOf } from "./support/http.js";
import { type JwksIssuer, startJwksIssuer } from "./support/jwks-issuer.js";
import { type SeededCatalog, startSeededCatalog } from "./support/seeded-catalog.js";

/** An origin the edge's CORS policy allows (the storefront's dev server). */
const ALLOWED_ORIGIN = "http://localhost:5173";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

describe("REST contract through Envoy", { timeout: 120_000 }, () => {
  let issuer: JwksIssuer;
  let catalog: SeededCatalog;
  let edge: TestEdge;
  let adminToken: string;
  let customerToken: string;

  before(async () => {
    issuer = await startJwksIssuer();
    catalog = await startSeededCatalog("edge_contract", { jwksUrl: issuer.jwksUrl });
    edge = await startTestEdge({
      services: new Map([
        ["catalog", portsOf(catalog.host)],
        ["identity", { grpc: NO_PORT, http: issuer.port }],
      ]),
    });
    [adminToken, customerToken] = await Promise.all([
      issuer.token({ roles: ["admin"] }),
      issuer.token({ roles: ["customer"] }),
    ]);
  });

  after(async () => {
    await edge?.close();
    await catalog?.close();
    await issuer?.close();
  });

  const call = (method: string, path: string, init?: CallInit) =>
    callAt(edge.url, method, path, init);

  /** Asserts a google.rpc.Status body with this code. */
  const assertStatus = (json: { code?: unknown; message?: unknown }, code: number) => {
    assert.equal(json.code, code, JSON.stringify(json));
    assert.equal(typeof json.message, "string");
  };

  let firstId: string;

  test("GET /v1/products?page_size=2 → 2 products and nextPageToken", async () => {
    const { status, json, headers } = await call("GET", "/v1/products?page_size=2");
    assert.equal(status, 200, JSON.stringify(json));
    assert.match(headers.get("content-type") ?? "", /application\/json/);
    assert.equal(headers.get("server"), "envoy");
    const [first] = json.products ?? [];
    assert.equal(json.products?.length, 2);
    assert.ok(typeof json.nextPageToken === "string" && json.nextPageToken.length > 0);
    assert.ok(first);
    firstId = first.id;
    assert.ok(first.price.currencyCode, "camelCase JSON names");
    // always_print_primitive_fields: a field at its default value is still there.
    for (const field of ["description", "imageUrl", "category", "version", "createTime"]) {
      assert.ok(field in first, `${field} is printed: ${JSON.stringify(first)}`);
    }
    const next = await call(
      "GET",
      `/v1/products?page_size=2&page_token=${encodeURIComponent(json.nextPageToken)}`,
    );
    assert.equal(next.status, 200);
    assert.notEqual(next.json.products?.[0]?.id, firstId);
  });

  test("GET /v1/products/{id} → the product; HEAD → the same head, no body", async () => {
    const got = await call("GET", `/v1/products/${firstId}`);
    assert.equal(got.status, 200, got.text);
    assert.equal(got.json.product?.id, firstId);
    const head = await call("HEAD", `/v1/products/${firstId}`);
    assert.equal(head.status, 200);
    assert.equal(head.text, "");
    assert.match(head.headers.get("content-type") ?? "", /application\/json/);
    assert.equal(Number(head.headers.get("content-length")), Buffer.byteLength(got.text));
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
    const detail = (json.details ?? []).find(
      (d: { "@type"?: string }) => d["@type"] === "type.googleapis.com/buf.validate.Violations",
    );
    assert.ok(detail, JSON.stringify(json));
    const names = (detail.violations ?? []).flatMap(
      (v: { field?: { elements?: { fieldName?: string }[] } }) =>
        (v.field?.elements ?? []).map((e) => e.fieldName),
    );
    assert.ok(names.includes("product_id"), JSON.stringify(detail));
  });

  const newProduct = (extra: Record<string, unknown> = {}) =>
    JSON.stringify({
      requestId: randomUUID(),
      sku: `EDGE-${randomUUID().slice(0, 8).toUpperCase()}`,
      name: "Edge test product",
      price: { currencyCode: "EUR", units: "12", nanos: 500000000 },
      category: "tests",
      ...extra,
    });

  test("POST /v1/products without a token → 401 from jwt_authn, with a Bearer challenge", async () => {
    const { status, json, headers } = await call("POST", "/v1/products", { body: newProduct() });
    assert.equal(status, 401);
    assert.deepEqual(json, { code: 16, message: "Jwt is missing" });
    assert.match(headers.get("www-authenticate") ?? "", /^Bearer realm="/);
  });

  test("POST /v1/products with a forged token → 401, the challenge says invalid_token", async () => {
    const { status, json, headers } = await call("POST", "/v1/products", {
      body: newProduct(),
      token: "eyJhbGciOiJFUzI1NiJ9.e30.AAAA",
    });
    assert.equal(status, 401);
    assertStatus(json, 16);
    assert.match(headers.get("www-authenticate") ?? "", /^Bearer .*error="invalid_token"/);
  });

  test("POST /v1/products with a customer token → 403 from catalog", async () => {
    const { status, json } = await call("POST", "/v1/products", {
      body: newProduct(),
      token: customerToken,
    });
    assert.equal(status, 403, JSON.stringify(json));
    assertStatus(json, 7);
  });

  test("POST /v1/products with an admin token → 200", async () => {
    const { status, json } = await call("POST", "/v1/products", {
      body: newProduct(),
      token: adminToken,
    });
    assert.equal(status, 200, JSON.stringify(json));
    assert.equal(json.product?.name, "Edge test product");
    assert.equal(json.product?.price.units, "12");
  });

  test("malformed JSON → 400 from the transcoder", async () => {
    const { status, json } = await call("POST", "/v1/products", {
      body: '{"name": ',
      token: adminToken,
    });
    assert.equal(status, 400);
    assertStatus(json, 3);
  });

  test("an unknown JSON field is dropped by the transcoder, not refused", async () => {
    const { status, json } = await call("POST", "/v1/products", {
      body: newProduct({ colour: "red" }),
      token: adminToken,
    });
    assert.equal(status, 200, JSON.stringify(json));
    assert.ok(!("colour" in json.product));
  });

  test("body over 1 MiB → 413 JSON", async () => {
    const huge = JSON.stringify({ name: "x".repeat(1024 * 1024 + 1) });
    const { status, json } = await call("POST", "/v1/products", { body: huge, token: adminToken });
    assert.equal(status, 413);
    assertStatus(json, 8);
  });

  test("API-looking paths no binding matches → 404 JSON, never the storefront", async () => {
    for (const path of ["/v1/nothing-here", "/v2/products", "/V1/products", "/.well-known/x"]) {
      const { status, json, headers } = await call("GET", path);
      assert.equal(status, 404, path);
      assert.deepEqual(json, { code: 5, message: `Could not resolve ${path} to a method.` });
      assert.equal(headers.get("content-type"), "application/json");
    }
  });

  test("a method the path has no binding for → 404 JSON (Envoy has no 405)", async () => {
    for (const [method, path] of [
      ["PUT", "/v1/products"],
      ["DELETE", "/v1/categories"],
      ["POST", `/v1/products/${randomUUID()}`],
    ] as const) {
      const { status, json, headers } = await call(method, path);
      assert.equal(status, 404, `${method} ${path}`);
      assertStatus(json, 5);
      assert.equal(headers.get("allow"), null);
    }
  });

  test("unknown query parameter → 400 naming it", async () => {
    const { status, json } = await call("GET", "/v1/products?colour=red");
    assert.equal(status, 400);
    assertStatus(json, 3);
    assert.match(json.message, /colour/);
  });

  test("x-request-id: a fresh uuid on every answer; the caller's own is kept", async () => {
    const fresh = await call("GET", "/v1/categories");
    assert.match(fresh.headers.get("x-request-id") ?? "", UUID);
    const again = await call("GET", "/v1/categories");
    assert.notEqual(again.headers.get("x-request-id"), fresh.headers.get("x-request-id"));
    const own = await call("GET", "/v1/categories", { headers: { "x-request-id": "req-42" } });
    assert.equal(own.headers.get("x-request-id"), "req-42");
    const refused = await call("GET", "/v1/nothing-here", {
      headers: { "x-request-id": "req-43" },
    });
    assert.equal(refused.headers.get("x-request-id"), "req-43", "Envoy's own answers too");
  });

  describe("CORS", () => {
    for (const path of ["/v1/products", "/meshmart.catalog.v1.CatalogService/ListProducts"]) {
      test(`preflight from an allowed origin on ${path}`, async () => {
        const res = await fetch(`${edge.url}${path}`, {
          method: "OPTIONS",
          headers: {
            origin: ALLOWED_ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
          },
        });
        assert.equal(res.status, 200);
        assert.equal(await res.text(), "");
        assert.equal(res.headers.get("access-control-allow-origin"), ALLOWED_ORIGIN);
        assert.match(res.headers.get("access-control-allow-methods") ?? "", /\bPOST\b/);
        const allowed = res.headers.get("access-control-allow-headers") ?? "";
        for (const h of ["authorization", "content-type", "connect-protocol-version"]) {
          assert.match(allowed, new RegExp(`\\b${h}\\b`));
        }
        assert.equal(res.headers.get("access-control-max-age"), "600");
      });
    }

    test("an actual request from an allowed origin: allow-origin and exposed headers", async () => {
      const res = await call("GET", "/v1/categories", { headers: { origin: ALLOWED_ORIGIN } });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("access-control-allow-origin"), ALLOWED_ORIGIN);
      const exposed = res.headers.get("access-control-expose-headers") ?? "";
      for (const h of ["x-request-id", "retry-after", "www-authenticate", "grpc-status"]) {
        assert.match(exposed, new RegExp(`\\b${h}\\b`));
      }
      assert.equal(res.headers.get("access-control-allow-credentials"), null);
    });

    test("a disallowed origin gets no allow-origin, preflight or not", async () => {
      const evil = "https://evil.example";
      const actual = await call("GET", "/v1/categories", { headers: { origin: evil } });
      assert.equal(actual.status, 200, "CORS is the browser's to enforce");
      assert.equal(actual.headers.get("access-control-allow-origin"), null);
      const preflight = await fetch(`${edge.url}/v1/products`, {
        method: "OPTIONS",
        headers: { origin: evil, "access-control-request-method": "POST" },
      });
      await preflight.body?.cancel();
      assert.equal(preflight.headers.get("access-control-allow-origin"), null);
      assert.equal(preflight.headers.get("access-control-allow-methods"), null);
    });
  });

  test("/healthz is Envoy's own health check", async () => {
    const res = await call("GET", "/healthz");
    assert.equal(res.status, 200);
    assert.equal(res.text, "");
  });

  test("access log: one JSON line per request, no bodies or tokens", async () => {
    const ids: string[] = [randomUUID(), randomUUID(), randomUUID()];
    const name = `Logged ${randomUUID()}`;
    await call("GET", "/v1/categories", { headers: { "x-request-id": ids[0] as string } });
    await call("POST", "/v1/products", {
      body: newProduct({ name }),
      token: adminToken,
      headers: { "x-request-id": ids[1] as string },
    });
    await call("GET", "/v1/nothing-here", { headers: { "x-request-id": ids[2] as string } });
    // Envoy flushes its access log on its own schedule.
    const lines = await waitFor("the three access log lines", () => {
      const found = edge.accessLog().filter((l) => ids.includes(l.request_id ?? ""));
      return found.length >= 3 ? found : undefined;
    });
    assert.equal(lines.length, 3, "exactly one line per request");
    const [get, post, missing] = ids.map((id) => lines.find((l) => l.request_id === id));
    assert.ok(get && post && missing);
    assert.equal(get.method, "GET");
    assert.equal(get.path, "/v1/categories");
    assert.equal(get.grpc_path, "/meshmart.catalog.v1.CatalogService/ListCategories");
    assert.equal(get.upstream_cluster, "catalog");
    assert.equal(Number(get.status), 200);
    assert.equal(Number(post.status), 200);
    assert.equal(post.upstream_cluster, "catalog");
    assert.equal(Number(missing.status), 404);
    for (const l of lines) {
      assert.ok(Number.isFinite(Number(l.duration_ms)), JSON.stringify(l));
      assert.ok(l.time, JSON.stringify(l));
    }
    const text = JSON.stringify(edge.accessLog());
    assert.ok(!text.includes(adminToken) && !text.includes(customerToken), "no tokens");
    assert.ok(!text.includes(name), "no bodies");
    assert.ok(!/authorization/i.test(text));
  });

  test("the edge keeps serving after all of the above", async () => {
    const { status, json } = await call("GET", "/v1/categories");
    assert.equal(status, 200);
    assert.ok(Array.isArray(json.categories) && json.categories.length > 0);
  });
});
