/**
 * A response that begins and then breaks off (its replica killed mid-answer: the sidecar
 * resets the stream, or without a sidecar the connection drops) cannot be retried by any
 * proxy. The grpc-js transport gives a side-effect-free method one more attempt, and
 * nothing else: a method with effects, a server's own error and a reset before any
 * response (which the mesh retries itself) fail as they came.
 */
import assert from "node:assert/strict";
import http2 from "node:http2";
import type { AddressInfo, Socket } from "node:net";
import { after, before, beforeEach, describe, test } from "node:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { CatalogService } from "../gen/meshmart/catalog/v1/catalog_service_pb.js";
import { OrderService } from "../gen/meshmart/orders/v1/orders_service_pb.js";
import { createGrpcJsTransport, type GrpcJsTransport } from "../src/grpc-js-transport.js";

/** How the server answers each attempt, in order; the last one repeats. */
type Answer = "ok" | "reset-after-headers" | "drop-after-headers" | "reset-at-once" | "internal";

let server: http2.Http2Server;
let transport: GrpcJsTransport;
let script: Answer[] = [];
let attempts = 0;
// The raw sockets by the client's port: an HTTP/2 session's own socket may not be destroyed.
const sockets = new Map<number | undefined, Socket>();

const EMPTY_MESSAGE = Buffer.from([0, 0, 0, 0, 0]);

function answer(stream: http2.ServerHttp2Stream, how: Answer) {
  if (how === "reset-at-once") {
    stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    return;
  }
  if (how === "internal") {
    stream.respond(
      { ":status": 200, "content-type": "application/grpc", "grpc-status": "13" },
      { endStream: true },
    );
    return;
  }
  stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
  if (how === "ok") {
    stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
    stream.end(EMPTY_MESSAGE);
    return;
  }
  // Headers and a message went out; the status never will.
  stream.write(EMPTY_MESSAGE, () => {
    if (how === "reset-after-headers") stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    else sockets.get(stream.session?.socket.remotePort)?.destroy();
  });
}

before(async () => {
  server = http2.createServer();
  server.on("connection", (socket: Socket) => sockets.set(socket.remotePort, socket));
  server.on("stream", (stream) => {
    stream.on("error", () => {});
    const how = script[Math.min(attempts, script.length - 1)] ?? "ok";
    attempts += 1;
    // Read the request before answering, as a real server does.
    stream.resume();
    stream.once("end", () => answer(stream, how));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  transport = createGrpcJsTransport({ baseUrl: `http://127.0.0.1:${port}` });
});
after(async () => {
  transport.close();
  await new Promise((resolve) => server.close(resolve));
});
beforeEach(() => {
  attempts = 0;
});

async function codeOf(call: Promise<unknown>): Promise<Code | "ok"> {
  try {
    await call;
    return "ok";
  } catch (e) {
    return ConnectError.from(e).code;
  }
}

const catalog = () => createClient(CatalogService, transport);
const orders = () => createClient(OrderService, transport);

describe("grpc-js transport: a response cut after it began", () => {
  test("a side-effect-free call whose stream is reset mid-response is tried once more", async () => {
    script = ["reset-after-headers", "ok"];
    assert.equal(
      await codeOf(catalog().getProduct({ productId: "p" }, { timeoutMs: 5_000 })),
      "ok",
    );
    assert.equal(attempts, 2);
  });

  test("…and so is one whose connection drops mid-response", async () => {
    script = ["drop-after-headers", "ok"];
    assert.equal(await codeOf(orders().getOrder({ orderId: "o" }, { timeoutMs: 5_000 })), "ok");
    assert.equal(attempts, 2);
  });

  test("only once: a second cut fails INTERNAL", async () => {
    script = ["reset-after-headers"];
    assert.equal(await codeOf(catalog().getProduct({ productId: "p" })), Code.Internal);
    assert.equal(attempts, 2);
  });

  test("a method with effects is never repeated", async () => {
    script = ["reset-after-headers", "ok"];
    assert.equal(await codeOf(orders().placeOrder({ requestId: "r" })), Code.Internal);
    assert.equal(attempts, 1);
  });

  test("a server's own INTERNAL is the answer, not a cut", async () => {
    script = ["internal", "ok"];
    assert.equal(await codeOf(catalog().getProduct({ productId: "p" })), Code.Internal);
    assert.equal(attempts, 1);
  });

  test("a reset before any response is left to the mesh's retry policy", async () => {
    script = ["reset-at-once", "ok"];
    assert.equal(await codeOf(catalog().getProduct({ productId: "p" })), Code.Internal);
    assert.equal(attempts, 1);
  });
});
