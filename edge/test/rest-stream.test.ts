import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  OrderService,
  type WatchOrderResponse,
} from "@meshmart/kit/gen/meshmart/orders/v1/orders_service_pb.js";
import {
  createLogSink,
  createTestIssuer,
  startTestHost,
  type TestHost,
  type TestIssuer,
  waitFor,
} from "@meshmart/kit/testing";
import { edgeConfigSchema, type RunningEdge, startEdge } from "../src/server.js";

// GET /v1/orders/{id}:watch (a server-streaming RPC) through the local edge, against a
// stand-in orders service whose WatchOrder behaves as each test needs.
const ENDLESS = randomUUID();
const BREAKS = randomUUID();
const MISSING = randomUUID();
let cancelledWatches = 0;

let issuer: TestIssuer;
let orders: TestHost;
let edge: RunningEdge;
let token: string;

const state = (orderId: string, n: number): Partial<WatchOrderResponse> => ({
  order: { id: orderId, userId: `state-${n}` } as WatchOrderResponse["order"],
});

before(async () => {
  issuer = await createTestIssuer();
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
  edge = await startEdge(
    edgeConfigSchema.parse({ EDGE_PORT: "0", UPSTREAMS: `orders=${orders.grpcTarget}` }),
    { verifier: issuer.verifier, logDestination: createLogSink().stream },
  );
});

after(async () => {
  await edge?.close();
  await orders?.close();
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

test("a failure after the first message cuts the response off without its closing bracket", async () => {
  const res = await watch(BREAKS);
  assert.equal(res.status, 200);
  const text = await res.text().catch(() => undefined);
  // Either the read fails (the connection was cut) or what arrived is not a whole array.
  if (text !== undefined) assert.ok(!text.trimEnd().endsWith("]"), text);
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
