/**
 * Errors Envoy itself raises on a Connect *streaming* call (WatchOrder): a streaming client
 * reads them only from a 200 response's end-of-stream message, so the edge's local replies
 * take that shape for `application/connect+json` and `+proto` requests.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { OrderService } from "@meshmart/kit/gen/meshmart/orders/v1/orders_service_pb.js";
import { startTestEdge, type TestEdge } from "../../tests/support/envoy-edge.js";
import { NO_PORT } from "./support/http.js";
import { type JwksIssuer, startJwksIssuer } from "./support/jwks-issuer.js";

const ORDER_ID = "7c0b3a52-4d47-4f44-9d1e-0a8b5c7f2e10";

describe("Envoy's refusals of a Connect stream", { timeout: 60_000 }, () => {
  let issuer: JwksIssuer;
  let edge: TestEdge;
  let token: string;

  before(async () => {
    issuer = await startJwksIssuer();
    // No orders behind the edge: a call that gets past jwt_authn finds no upstream.
    edge = await startTestEdge({
      services: new Map([["identity", { grpc: NO_PORT, http: issuer.port }]]),
    });
    token = await issuer.token({});
  });

  after(async () => {
    await edge?.close();
    await issuer?.close();
  });

  test("a refused stream is a 200 whose only message is the end of stream, with the error", async () => {
    for (const format of ["json", "proto"] as const) {
      const res = await fetch(`${edge.url}/meshmart.orders.v1.OrderService/WatchOrder`, {
        method: "POST",
        headers: {
          "content-type": `application/connect+${format}`,
          "connect-protocol-version": "1",
        },
        body: Buffer.concat([Buffer.from([0, 0, 0, 0, 2]), Buffer.from("{}")]),
      });
      assert.equal(res.status, 200, format);
      assert.equal(res.headers.get("content-type"), `application/connect+${format}`);
      const body = Buffer.from(await res.arrayBuffer());
      assert.equal(body.readUInt8(0), 0b10, "end-stream flag");
      assert.equal(body.readUInt32BE(1), body.length - 5);
      const end = JSON.parse(body.subarray(5).toString()) as {
        error: { code: string; message: string };
      };
      assert.deepEqual(end, {
        error: { code: "unauthenticated", message: "a valid bearer token is required" },
      });
    }
  });

  const transports: [string, (auth?: string) => Transport][] = [
    ["JSON", (auth) => transport(auth, false)],
    ["binary", (auth) => transport(auth, true)],
  ];
  function transport(auth: string | undefined, useBinaryFormat: boolean): Transport {
    return createConnectTransport({
      baseUrl: edge.url,
      httpVersion: "1.1",
      useBinaryFormat,
      interceptors: [
        (next) => (req) => {
          if (auth !== undefined) req.header.set("authorization", `Bearer ${auth}`);
          return next(req);
        },
      ],
    });
  }

  async function watchError(client: ReturnType<typeof createClient<typeof OrderService>>) {
    try {
      for await (const _ of client.watchOrder({ orderId: ORDER_ID })) {
        // no message is expected
      }
    } catch (err) {
      return ConnectError.from(err);
    }
    assert.fail("the stream ended without an error");
  }

  for (const [name, make] of transports) {
    test(`${name}: a Connect client sees the code and message, not a bare HTTP status`, async () => {
      const anonymous = await watchError(createClient(OrderService, make()));
      assert.equal(anonymous.code, Code.Unauthenticated);
      assert.equal(anonymous.rawMessage, "a valid bearer token is required");
      // Past jwt_authn, no orders to stream from: Envoy's 503, as Unavailable.
      const signedIn = await watchError(createClient(OrderService, make(token)));
      assert.equal(signedIn.code, Code.Unavailable);
      assert.doesNotMatch(signedIn.rawMessage, /^HTTP \d+/);
    });
  }

  test("a unary Connect call gets Envoy's reason in a Connect error body", async () => {
    const client = createClient(OrderService, transport(token, false));
    await assert.rejects(client.listOrders({}), (err: unknown) => {
      const e = ConnectError.from(err);
      assert.equal(e.code, Code.Unavailable);
      assert.match(e.rawMessage, /upstream connect error/);
      return true;
    });
  });
});
