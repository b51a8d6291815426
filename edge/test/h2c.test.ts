/**
 * HTTP/2 with prior knowledge on the edge's one port, next to HTTP/1.1 (Envoy's codec_type
 * AUTO tells them apart by the connection preface): both reach the same routes and get the
 * same answers, Envoy's own included.
 */
import assert from "node:assert/strict";
import { connect } from "node:http2";
import { after, before, test } from "node:test";
import { startTestEdge, type TestEdge } from "../../tests/support/envoy-edge.js";

let edge: TestEdge;

before(async () => {
  edge = await startTestEdge({ services: new Map() });
});
after(() => edge?.close());

interface H2Answer {
  status: number;
  headers: Record<string, unknown>;
  body: string;
}

function h2(path: string, method = "GET"): Promise<H2Answer> {
  return new Promise((resolve, reject) => {
    const session = connect(edge.url);
    session.on("error", reject);
    const req = session.request({ ":path": path, ":method": method });
    let headers: Record<string, unknown> = {};
    let body = "";
    req.on("response", (h) => {
      headers = h;
    });
    req.setEncoding("utf8");
    req.on("data", (chunk: string) => {
      body += chunk;
    });
    req.on("end", () => {
      session.close();
      resolve({ status: Number(headers[":status"]), headers, body });
    });
    req.on("error", reject);
    req.end();
  });
}

test("HTTP/2 prior knowledge and HTTP/1.1 on the same port both answer", async () => {
  const overH2 = await h2("/healthz");
  assert.equal(overH2.status, 200);
  assert.equal(overH2.headers.server, "envoy");
  const overH1 = await fetch(`${edge.url}/healthz`);
  assert.equal(overH1.status, 200);
});

test("the same routes and the same errors over either", async () => {
  for (const path of ["/v1/nowhere", "/openapi.json"]) {
    const overH2 = await h2(path);
    const overH1 = await fetch(`${edge.url}${path}`);
    assert.equal(overH2.status, overH1.status, path);
    assert.equal(overH2.headers["content-type"], overH1.headers.get("content-type"), path);
    assert.deepEqual(JSON.parse(overH2.body), await overH1.json(), path);
  }
  const refused = await h2("/v1/orders");
  assert.equal(refused.status, 401);
  assert.deepEqual(JSON.parse(refused.body), { code: 16, message: "Jwt is missing" });
});
