import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import http2 from "node:http2";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  OrderService,
  type WatchOrderResponse,
} from "@meshmart/kit/gen/meshmart/orders/v1/orders_service_pb.js";
import { startTestHost, type TestHost, waitFor } from "@meshmart/kit/testing";
import { startTestEdge, type TestEdge } from "../../tests/support/envoy-edge.js";
import { NO_PORT, portsOf } from "./support/http.js";
import { type JwksIssuer, startJwksIssuer } from "./support/jwks-issuer.js";

// GET /v1/orders/{id}:watch (a server-streaming RPC) through Envoy's transcoder, against a
// stand-in orders service whose WatchOrder behaves as each test needs. The transcoder
// streams a JSON array that grows by one element per message.
const ENDLESS = randomUUID();
const BREAKS = randomUUID();
const MISSING = randomUUID();
let cancelledWatches = 0;

let issuer: JwksIssuer;
let orders: TestHost;
let edge: TestEdge;
let token: string;

const state = (orderId: string, n: number): Partial<WatchOrderResponse> => ({
  order: { id: orderId, userId: `state-${n}` } as WatchOrderResponse["order"],
});

before(async () => {
  issuer = await startJwksIssuer();
  token = await issuer.token({ roles: ["customer"] });
  orders = await startTestHost({
    verifier: issuer.verifier,
    routes: (router) => {
      router.service(OrderService, {
        async *watchOrder(req, ctx) {
          if (req.orderId === MISSING) throw new ConnectError("no such order", Code.NotFound);
          for (let n = 0; ; n++) {
            if (req.orderId === BREAKS && n === 2) {
              throw new ConnectError("orders lost its database", Code.Unavailable);
            }
            if (ctx.signal.aborted) {
              cancelledWatches++;
              return;
            }
            yield state(req.orderId, n);
            await sleep(50, undefined, { signal: ctx.signal }).catch(() => {});
          }
        },
      });
    },
  });
  edge = await startTestEdge({
    services: new Map([
      ["orders", portsOf(orders)],
      ["identity", { grpc: NO_PORT, http: issuer.port }],
    ]),
  });
});

after(async () => {
  await edge?.close();
  await orders?.close();
  await issuer?.close();
});

const watch = (orderId: string, signal?: AbortSignal) =>
  fetch(`${edge.url}/v1/orders/${orderId}:watch`, {
    headers: { authorization: `Bearer ${token}` },
    ...(signal === undefined ? {} : { signal }),
  });

test("each message reaches the client as it comes, not when the stream ends", async () => {
  const controller = new AbortController();
  const res = await watch(ENDLESS, controller.signal);
  assert.equal(res.status, 200);
  const reader = (res.body ?? assert.fail("no body")).getReader();
  let text = "";
  while (!text.includes("state-1")) {
    const { value, done } = await reader.read();
    assert.equal(done, false, "the stream ended early");
    text += new TextDecoder().decode(value);
  }
  assert.match(text, /^\[\{"order":\{"id":"[^"]+","userId":"state-0"/);
  controller.abort();
});

test("a client that hangs up cancels the upstream stream", async () => {
  const before = cancelledWatches;
  const controller = new AbortController();
  const res = await watch(ENDLESS, controller.signal);
  const reader = (res.body ?? assert.fail("no body")).getReader();
  await reader.read();
  controller.abort();
  await waitFor("orders to see the watch cancelled", async () => cancelledWatches > before, 5_000);
});

test("a failure after the first message closes the array; only HTTP/2 trailers tell why", async () => {
  // Envoy's transcoder ends the array it started whatever the stream's status; over
  // HTTP/1.1 the status is dropped with the trailers, so a client sees the states so far
  // (here two, neither terminal) and may watch again.
  const res = await watch(BREAKS);
  assert.equal(res.status, 200);
  const states = (await res.json()) as { order: { userId: string } }[];
  assert.deepEqual(
    states.map((s) => s.order.userId),
    ["state-0", "state-1"],
  );
  const h2 = await new Promise<{ body: string; trailers: http2.IncomingHttpHeaders }>(
    (resolve, reject) => {
      const session = http2.connect(edge.url);
      session.on("error", reject);
      const req = session.request({
        ":path": `/v1/orders/${BREAKS}:watch`,
        authorization: `Bearer ${token}`,
        te: "trailers",
      });
      let body = "";
      let trailers: http2.IncomingHttpHeaders = {};
      req.on("trailers", (t) => {
        trailers = t;
      });
      req.setEncoding("utf8");
      req.on("data", (d: string) => {
        body += d;
      });
      req.on("end", () => {
        session.close();
        resolve({ body, trailers });
      });
      req.on("error", reject);
      req.end();
    },
  );
  assert.equal((JSON.parse(h2.body) as unknown[]).length, 2);
  assert.equal(h2.trailers["grpc-status"], String(Code.Unavailable));
  assert.equal(decodeURIComponent(String(h2.trailers["grpc-message"])), "orders lost its database");
});

test("a failure before the first message is an ordinary REST error", async () => {
  const res = await watch(MISSING);
  assert.equal(res.status, 404);
  const body = (await res.json()) as { code: number; message: string };
  assert.equal(body.code, Code.NotFound);
  assert.equal(body.message, "no such order");
  const anonymous = await fetch(`${edge.url}/v1/orders/${ENDLESS}:watch`);
  assert.equal(anonymous.status, 401);
  await anonymous.body?.cancel();
});
