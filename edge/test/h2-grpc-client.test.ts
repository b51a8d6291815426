import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  EchoRequestSchema,
  EchoStreamRequestSchema,
} from "@meshmart/kit/gen/meshmart/echo/v1/echo_service_pb.js";
import {
  EchoService,
  echoRoutes,
  freePort,
  startTestHost,
  type TestHost,
} from "@meshmart/kit/testing";
import { createH2GrpcClient, type H2GrpcClient } from "../src/h2-grpc-client.js";

// The edge's own gRPC client against a kit service (the echo service on the real gRPC port).
let host: TestHost;
let client: H2GrpcClient;

before(async () => {
  host = await startTestHost({ routes: echoRoutes });
  client = createH2GrpcClient(host.grpcTarget);
});
after(async () => {
  client?.close();
  await host?.close();
});

async function failure(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    await promise;
  } catch (reason) {
    assert.ok(reason instanceof ConnectError, String(reason));
    return reason;
  }
  return assert.fail("expected the call to fail");
}

async function collect<T>(messages: AsyncIterable<T>, stopAfter = Number.POSITIVE_INFINITY) {
  const out: T[] = [];
  for await (const m of messages) {
    out.push(m);
    if (out.length >= stopAfter) break;
  }
  return out;
}

const echoStream = (message: string, repeat: number, signal?: AbortSignal) =>
  client.serverStream(
    EchoService.method.echoStream,
    signal,
    5_000,
    undefined,
    create(EchoStreamRequestSchema, { message, repeat }),
  );

test("unary: the answer, and a status from the trailers as a ConnectError", async () => {
  const ok = await client.unary(
    EchoService.method.echo,
    undefined,
    5_000,
    undefined,
    create(EchoRequestSchema, { message: "hi" }),
  );
  assert.equal(ok.message.message, "hi");
  const err = await failure(
    client.unary(
      EchoService.method.echo,
      undefined,
      5_000,
      undefined,
      create(EchoRequestSchema, { message: "x", failWithCode: Code.NotFound }),
    ),
  );
  assert.equal(err.code, Code.NotFound);
});

test("server stream: every message in order, also when frames span HTTP/2 DATA frames", async () => {
  // 100 messages of 40 KB: each frame spans several 16 KB DATA frames, and chunks end mid-frame.
  const text = "m".repeat(40_000);
  const messages = await collect(echoStream(text, 100));
  assert.equal(messages.length, 100);
  assert.deepEqual(
    messages.map((m) => m.index),
    Array.from({ length: 100 }, (_, i) => i),
  );
  assert.ok(messages.every((m) => m.message === text));
});

test("server stream: a status before any message is thrown as the service's error", async () => {
  const err = await failure(collect(echoStream("", 1)));
  assert.equal(err.code, Code.InvalidArgument);
});

test("server stream: a reader that stops early ends the call, and the session stays usable", async () => {
  const first = await collect(echoStream("a", 100), 3);
  assert.equal(first.length, 3);
  assert.equal((await collect(echoStream("b", 5))).length, 5);
});

test("server stream: an abort rejects with CANCELED", async () => {
  const controller = new AbortController();
  // 4 MB in all: far more than HTTP/2 flow control lets the server send before we read,
  // so the stream cannot have ended before the abort.
  const messages = echoStream("c".repeat(40_000), 100, controller.signal)[Symbol.asyncIterator]();
  assert.equal((await messages.next()).done, false);
  controller.abort();
  // Messages already received may still be handed out; the stream then ends CANCELED.
  const err = await failure(
    (async () => {
      for (;;) if ((await messages.next()).done) return;
    })(),
  );
  assert.equal(err.code, Code.Canceled);
});

test("server stream: an unreachable upstream is UNAVAILABLE without its address", async () => {
  const nowhere = createH2GrpcClient(`127.0.0.1:${await freePort()}`);
  try {
    const err = await failure(
      collect(
        nowhere.serverStream(
          EchoService.method.echoStream,
          undefined,
          2_000,
          undefined,
          create(EchoStreamRequestSchema, { message: "x", repeat: 1 }),
        ),
      ),
    );
    assert.equal(err.code, Code.Unavailable);
    assert.doesNotMatch(err.message, /127\.0\.0\.1/);
  } finally {
    nowhere.close();
  }
});
