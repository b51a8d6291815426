import assert from "node:assert/strict";
import { connect } from "node:http2";
import { after, before, test } from "node:test";
import { createLogSink } from "@meshmart/kit/testing";
import { edgeConfigSchema, type RunningEdge, startEdge } from "../src/server.js";

// HTTP/2 with prior knowledge (EDGE_H2C_PORT) reaches the same handler as HTTP/1.1.
let edge: RunningEdge;

before(async () => {
  edge = await startEdge(edgeConfigSchema.parse({ EDGE_PORT: "0", EDGE_H2C_PORT: "0" }), {
    logDestination: createLogSink().stream,
  });
});
after(() => edge.close());

function h2get(path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const session = connect(edge.h2cUrl ?? assert.fail("no h2c listener"));
    session.on("error", reject);
    const req = session.request({ ":path": path, ":method": "GET" });
    let status = 0;
    let body = "";
    req.on("response", (headers) => {
      status = Number(headers[":status"]);
    });
    req.setEncoding("utf8");
    req.on("data", (chunk: string) => {
      body += chunk;
    });
    req.on("end", () => {
      session.close();
      resolve({ status, body });
    });
    req.on("error", reject);
    req.end();
  });
}

test("HTTP/2 cleartext and HTTP/1.1 both answer", async () => {
  const h2 = await h2get("/healthz");
  assert.equal(h2.status, 200);
  const h1 = await fetch(`${edge.url}/healthz`);
  assert.equal(h1.status, 200);
});

test("an HTTP/2 request gets the same transcoding errors as HTTP/1.1", async () => {
  const h2 = await h2get("/v1/nowhere");
  const h1 = await fetch(`${edge.url}/v1/nowhere`);
  assert.equal(h2.status, h1.status);
  assert.deepEqual(JSON.parse(h2.body), await h1.json());
});
