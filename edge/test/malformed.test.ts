/**
 * Malformed input against the real Envoy edge, table-driven: every case answers 4xx with a
 * google.rpc.Status JSON body (never 5xx, never an empty body), and a good request right
 * after it still succeeds. Raw sockets send what fetch would refuse to. What Envoy accepts
 * that a stricter parser would refuse is pinned down separately, with why it is harmless.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { startTestEdge, type TestEdge } from "../../tests/support/envoy-edge.js";
import { call, NO_PORT, portsOf, raw } from "./support/http.js";
import { type JwksIssuer, startJwksIssuer } from "./support/jwks-issuer.js";
import { type SeededCatalog, startSeededCatalog } from "./support/seeded-catalog.js";

interface Answer {
  status: number;
  body: string;
  headers: string;
}

describe("malformed input through Envoy", { timeout: 90_000 }, () => {
  let issuer: JwksIssuer;
  let catalog: SeededCatalog;
  let edge: TestEdge;
  let admin: string;
  let productId: string;

  before(async () => {
    issuer = await startJwksIssuer();
    catalog = await startSeededCatalog("edge_malformed", { verifier: issuer.verifier });
    edge = await startTestEdge({
      services: new Map([
        ["catalog", portsOf(catalog.host)],
        ["identity", { grpc: NO_PORT, http: issuer.port }],
      ]),
    });
    admin = await issuer.token({ roles: ["admin"] });
    productId = (await call(edge.url, "GET", "/v1/products?page_size=1")).json.products[0].id;
  });

  after(async () => {
    await edge?.close();
    await catalog?.close();
    await issuer?.close();
  });

  const viaFetch = async (
    method: string,
    path: string,
    body?: string,
    headers: Record<string, string> = {},
  ): Promise<Answer> => {
    const res = await call(edge.url, method, path, {
      ...(body === undefined ? {} : { body }),
      token: body === undefined ? undefined : admin,
      headers,
    });
    return { status: res.status, body: res.text, headers: [...res.headers].join("\n") };
  };
  const post = (body: string) => viaFetch("POST", "/v1/products", body);
  const get = (path: string) => viaFetch("GET", path);
  const rawRequest = async (request: string): Promise<Answer> => {
    const res = await raw(edge.port, request);
    return { status: res.status, body: res.body, headers: res.head };
  };
  const valid = {
    requestId: randomUUID(),
    sku: "EDGE-MAL-1",
    name: "n",
    price: { currencyCode: "EUR", units: "1" },
    category: "tests",
  };

  const cases: [string, () => Promise<Answer>, number][] = [
    ["invalid JSON", () => post('{"name": '), 400],
    ["JSON that is not an object", () => post("[1,2]"), 400],
    ["wrong types", () => post(JSON.stringify({ ...valid, name: 5, price: "cheap" })), 400],
    ["int64 out of range", () => post(JSON.stringify({ ...valid, price: { units: "1e40" } })), 400],
    ["body over 1 MiB", () => post(JSON.stringify({ name: "x".repeat(2 * 1024 * 1024) })), 413],
    ["bad path variable", () => get("/v1/products/not-a-uuid"), 400],
    ["path variable with an encoded slash", () => get("/v1/products/a%2Fb"), 400],
    ["bad percent-encoding in the path", () => get("/v1/products/%E0%A4%A"), 400],
    ["wrong query types", () => get("/v1/products?page_size=lots"), 400],
    [
      "URL over the 32 KiB header limit",
      () => get(`/v1/products?query=${"a".repeat(40_000)}`),
      431,
    ],
    [
      "header names with underscores",
      () => rawRequest("GET /v1/categories HTTP/1.1\r\nHost: x\r\nX_Forged: 1\r\n\r\n"),
      400,
    ],
    [
      "conflicting Content-Length and Transfer-Encoding (smuggling)",
      () =>
        rawRequest(
          "POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
      400,
    ],
    [
      "a Content-Length that is not a number",
      () => rawRequest("POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"),
      400,
    ],
    ["NUL in the path", () => rawRequest("GET /v1/\0 HTTP/1.1\r\nHost: x\r\n\r\n"), 400],
    ["an unknown method", () => rawRequest("BREW /v1/categories HTTP/1.1\r\nHost: x\r\n\r\n"), 400],
    ["HTTP/1.0", () => rawRequest("GET /v1/categories HTTP/1.0\r\nHost: x\r\n\r\n"), 426],
  ];

  for (const [name, send, expected] of cases) {
    test(`${name} → ${expected} JSON, then a good request still works`, async () => {
      const { status, body } = await send();
      assert.equal(status, expected, `${name}: ${body}`);
      const json = JSON.parse(body) as { code: unknown; message: unknown };
      assert.equal(typeof json.code, "number", body);
      assert.equal(typeof json.message, "string", body);
      const good = await fetch(`${edge.url}/v1/products/${productId}`);
      assert.equal(good.status, 200);
      await good.body?.cancel();
    });
  }

  test("what Envoy's parser accepts, harmlessly", async () => {
    // An obs-fold continuation line is folded into the header's value (RFC 9112 §5.2).
    const folded = await rawRequest(
      "GET /v1/categories HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\nConnection: close\r\n\r\n",
    );
    assert.equal(folded.status, 200);
    // A query value that is not valid percent-encoding is taken literally.
    const literal = await get("/v1/products?query=%zz");
    assert.equal(literal.status, 200);
    assert.deepEqual(JSON.parse(literal.body).products, []);
  });

  test("injected CR/LF never makes a response header of its own", async () => {
    // Encoded in the query: stays data.
    const encoded = await get("/v1/products?query=%0D%0ASet-Cookie:%20x=1");
    assert.ok(encoded.status < 500, String(encoded.status));
    assert.doesNotMatch(encoded.headers, /^set-cookie/im);
    // A bare CR inside a request id: Envoy drops the CR, so what it echoes is one header.
    const bare = await rawRequest(
      "GET /v1/categories HTTP/1.1\r\nHost: x\r\nX-Request-Id: a\rSet-Cookie: x=1\r\nConnection: close\r\n\r\n",
    );
    assert.ok(bare.status === 200 || bare.status === 400, String(bare.status));
    assert.doesNotMatch(bare.headers, /^set-cookie/im);
    assert.doesNotMatch(bare.headers, /\r(?!\n)/);
    // Nor through an error answer of Envoy's own.
    const refused = await rawRequest(
      "GET /v1/nothing HTTP/1.1\r\nHost: x\r\nX-Request-Id: a\rSet-Cookie: x=1\r\nConnection: close\r\n\r\n",
    );
    assert.doesNotMatch(refused.headers, /^set-cookie/im);
  });
});
