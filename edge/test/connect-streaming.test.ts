import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { OrderService } from "@meshmart/kit/gen/meshmart/orders/v1/orders_service_pb.js";
import { createLogSink } from "@meshmart/kit/testing";
import { edgeConfigSchema, type RunningEdge, startEdge } from "../src/server.js";

// Errors the edge itself raises on a Connect *streaming* call (WatchOrder): a streaming
// client reads them only from a 200 response's end-of-stream message.
let edge: RunningEdge;

before(async () => {
  edge = await startEdge(edgeConfigSchema.parse({ EDGE_PORT: "0" }), {
    logDestination: createLogSink().stream,
  });
});
after(() => edge?.close());

test("a refused stream ends with the edge's error in the end-of-stream message", async () => {
  const res = await fetch(`${edge.url}/meshmart.orders.v1.OrderService/WatchOrder`, {
    method: "POST",
    headers: { "content-type": "application/connect+json", "connect-protocol-version": "1" },
    body: Buffer.concat([Buffer.from([0, 0, 0, 0, 2]), Buffer.from("{}")]),
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "application/connect+json");
  const body = Buffer.from(await res.arrayBuffer());
  assert.equal(body.readUInt8(0), 0b10, "end-stream flag");
  assert.equal(body.readUInt32BE(1), body.length - 5);
  const end = JSON.parse(body.subarray(5).toString()) as {
    error: { code: string; message: string };
  };
  assert.equal(end.error.code, "unauthenticated");
  assert.ok(end.error.message.length > 0);
});

test("a Connect client sees the code and message, not a bare HTTP status", async () => {
  const client = createClient(
    OrderService,
    createConnectTransport({ baseUrl: edge.url, httpVersion: "1.1" }),
  );
  await assert.rejects(
    async () => {
      for await (const _ of client.watchOrder({
        orderId: "7c0b3a52-4d47-4f44-9d1e-0a8b5c7f2e10",
      })) {
        // no message is expected
      }
    },
    (err: unknown) => {
      assert.ok(err instanceof ConnectError);
      assert.equal(err.code, Code.Unauthenticated);
      assert.doesNotMatch(err.rawMessage, /^HTTP \d+/);
      return true;
    },
  );
});
