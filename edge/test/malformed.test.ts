/**
 * Malformed input, table-driven: every case answers 4xx (never 5xx), and a good request
 * right after it still succeeds. Raw sockets send what fetch would refuse to.
 */
import assert from "node:assert/strict";
import { connect } from "node:net";
import { after, before, describe, test } from "node:test";
import { createLogSink, createTestIssuer } from "@meshmart/kit/testing";
import { edgeConfigSchema, type RunningEdge, startEdge } from "../src/server.js";
import { type SeededCatalog, startSeededCatalog } from "./support/seeded-catalog.js";

/** Sends raw bytes; resolves with the status and raw head of the answer. */
function raw(port: number, request: string): Promise<{ status: number; head: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    let data = "";
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => {
      data += chunk;
    });
    socket.once("error", reject);
    socket.once("close", () => {
      const head = data.split("\r\n\r\n")[0] ?? "";
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0), head });
    });
    socket.end(request, "latin1");
  });
}

describe("malformed input", { timeout: 60_000 }, () => {
  let catalog: SeededCatalog;
  let edge: RunningEdge;
  let admin: string;
  let productId: string;

  before(async () => {
    const issuer = await createTestIssuer();
    catalog = await startSeededCatalog("edge_malformed", { verifier: issuer.verifier });
    edge = await startEdge(
      edgeConfigSchema.parse({
        EDGE_PORT: "0",
        CATALOG_GRPC_ADDR: catalog.host.grpcTarget,
        EDGE_MAX_BODY_BYTES: String(64 * 1024),
      }),
      { verifier: issuer.verifier, logDestination: createLogSink().stream },
    );
    admin = await issuer.token({ roles: ["admin"] });
    const list = (await (await fetch(`${edge.url}/v1/products?page_size=1`)).json()) as {
      products: { id: string }[];
    };
    productId = list.products[0]?.id ?? "";
  });

  after(async () => {
    await edge?.close();
    await catalog?.close();
  });

  const post = (body: string) =>
    fetch(`${edge.url}/v1/products`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${admin}` },
      body,
    }).then((r) => ({ status: r.status, head: "" }));
  const get = (path: string) =>
    fetch(`${edge.url}${path}`).then((r) => ({ status: r.status, head: "" }));
  const valid = {
    requestId: crypto.randomUUID(),
    sku: "EDGE-MAL-1",
    name: "n",
    price: { currencyCode: "EUR", units: "1" },
    category: "tests",
  };

  const cases: [string, () => Promise<{ status: number; head: string }>, number[]][] = [
    ["invalid JSON", () => post('{"name": '), [400]],
    ["JSON that is not an object", () => post("[1,2]"), [400]],
    ["wrong types", () => post(JSON.stringify({ ...valid, name: 5, price: "cheap" })), [400]],
    [
      "int64 out of range",
      () => post(JSON.stringify({ ...valid, price: { units: "1e40" } })),
      [400],
    ],
    ["unknown fields", () => post(JSON.stringify({ ...valid, colour: "red" })), [400]],
    ["huge body", () => post(JSON.stringify({ name: "x".repeat(2 * 1024 * 1024) })), [413]],
    ["bad path variable", () => get("/v1/products/not-a-uuid"), [400]],
    ["path variable with an encoded slash", () => get("/v1/products/a%2Fb"), [400, 404]],
    ["bad percent-encoding in the path", () => get("/v1/products/%E0%A4%A"), [400]],
    ["bad percent-encoding in the query", () => get("/v1/products?query=%zz"), [400]],
    ["wrong query types", () => get("/v1/products?page_size=lots"), [400]],
    // Node's parser caps the request head (16 KiB): 431, as Envoy's 60 KiB cap answers.
    ["overlong URL", () => get(`/v1/products?query=${"a".repeat(70_000)}`), [400, 414, 431]],
    [
      "CR/LF inside a header value",
      () =>
        raw(
          edge.port,
          "GET /v1/categories HTTP/1.1\r\nHost: x\r\nX-Request-Id: a\rSet-Cookie: x=1\r\n\r\n",
        ),
      [400],
    ],
    [
      "obs-fold header continuation",
      () =>
        raw(
          edge.port,
          "GET /v1/categories HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\nConnection: close\r\n\r\n",
        ),
      [400],
    ],
    [
      "conflicting Content-Length and Transfer-Encoding (smuggling)",
      () =>
        raw(
          edge.port,
          "POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
      [400],
    ],
    ["NUL in the path", () => raw(edge.port, "GET /v1/\0 HTTP/1.1\r\nHost: x\r\n\r\n"), [400]],
  ];

  for (const [name, send, expected] of cases) {
    test(`${name} → ${expected.join("/")}, then a good request still works`, async () => {
      const { status } = await send();
      assert.ok(expected.includes(status), `${name}: got ${status}`);
      assert.ok(status >= 400 && status < 500);
      const good = await fetch(`${edge.url}/v1/products/${productId}`);
      assert.equal(good.status, 200);
    });
  }

  test("injected request ids and encoded CR/LF never reach response headers", async () => {
    const res = await fetch(`${edge.url}/v1/products?query=%0D%0ASet-Cookie:%20x=1`, {
      headers: { "x-request-id": "<script>alert(1)</script>" },
    });
    assert.ok(res.status < 500, String(res.status));
    assert.equal(res.headers.get("set-cookie"), null);
    assert.match(res.headers.get("x-request-id") ?? "", /^[0-9a-f-]{36}$/);
  });
});
