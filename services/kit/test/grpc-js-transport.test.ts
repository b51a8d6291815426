/**
 * The grpc-js transport against a real kit host, call for call beside connect-node's gRPC
 * transport: what a caller sees (messages, codes, messages of errors, details, headers,
 * trailers, deadlines, cancellation, interceptors) must be the same through both.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import {
  Code,
  ConnectError,
  createClient,
  type Interceptor,
  type ServiceImpl,
  type Transport,
} from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ViolationsSchema } from "../gen/buf/validate/validate_pb.js";
import { errorInfosOf, errorWithInfo } from "../src/error-info.js";
import { createGrpcJsTransport, type GrpcJsTransport } from "../src/grpc-js-transport.js";
import { EchoService, echoImpl } from "../src/testing/echo.js";
import { startTestHost, type TestHost } from "../src/testing/host.js";

interface Seen {
  header: Headers;
  timeoutMs: number | undefined;
  aborted: Promise<unknown>;
}

let host: TestHost;
const seen: Seen[] = [];
const transports: GrpcJsTransport[] = [];

// "headers:" answers with a response header and trailer; "info:" fails with an ErrorInfo
// and error metadata; anything else is the kit's echo.
const impl: ServiceImpl<typeof EchoService> = {
  async echo(req, ctx) {
    seen.push({
      header: new Headers(ctx.requestHeader),
      timeoutMs: ctx.timeoutMs(),
      aborted: new Promise((resolve) =>
        ctx.signal.addEventListener("abort", () => resolve(ctx.signal.reason), { once: true }),
      ),
    });
    if (req.message.startsWith("headers:")) {
      ctx.responseHeader.set("x-answer-header", "h1");
      ctx.responseTrailer.set("x-answer-trailer", "t1");
      ctx.responseTrailer.set("x-answer-trailer-bin", Buffer.from([0, 1, 254]).toString("base64"));
    }
    if (req.message.startsWith("info:")) {
      const err = errorWithInfo("card declined: insufficient funds", Code.FailedPrecondition, {
        reason: "CARD_DECLINED",
        domain: "payments.meshmart",
        metadata: { decline_code: "insufficient_funds" },
      });
      err.metadata.set("x-error-trailer", "e1");
      throw err;
    }
    return echoImpl.echo(req, ctx);
  },
  echoStream: (req, ctx) => echoImpl.echoStream(req, ctx),
};

before(async () => {
  host = await startTestHost({ routes: (router) => router.service(EchoService, impl) });
});
after(async () => {
  for (const t of transports) t.close();
  await host.close();
});

function grpcJs(interceptors: Interceptor[] = [], baseUrl = `http://${host.grpcTarget}`) {
  const t = createGrpcJsTransport({ baseUrl, interceptors });
  transports.push(t);
  return t;
}
const connectNode = (baseUrl = `http://${host.grpcTarget}`) => createGrpcTransport({ baseUrl });

async function failure(promise: Promise<unknown>): Promise<ConnectError> {
  return promise.then(
    () => assert.fail("expected the call to fail"),
    (e: unknown) => {
      assert.ok(e instanceof ConnectError, `not a ConnectError: ${String(e)}`);
      return e;
    },
  );
}

/** What a caller can observe of an error, comparable across transports. */
function shape(err: ConnectError) {
  return {
    code: err.code,
    rawMessage: err.rawMessage,
    message: err.message,
    details: err.details.map((d) =>
      "desc" in d ? { desc: d.desc.typeName } : { type: d.type, value: [...d.value] },
    ),
  };
}

async function bothFail(call: (t: Transport) => Promise<unknown>) {
  const [viaGrpcJs, viaConnect] = [
    await failure(call(grpcJs())),
    await failure(call(connectNode())),
  ];
  return { viaGrpcJs, viaConnect };
}

describe("grpc-js transport", () => {
  test("a unary call returns the response, with the server's headers and trailers", async () => {
    let header: Headers | undefined;
    let trailer: Headers | undefined;
    const res = await createClient(EchoService, grpcJs()).echo(
      { message: "headers: hello" },
      { onHeader: (h) => (header = h), onTrailer: (t) => (trailer = t) },
    );
    assert.equal(res.message, "headers: hello");
    assert.equal(header?.get("x-answer-header"), "h1");
    assert.equal(trailer?.get("x-answer-trailer"), "t1");
    // Binary trailers arrive base64-encoded, as connect-node hands them over.
    assert.deepEqual(
      [...Buffer.from(trailer?.get("x-answer-trailer-bin") ?? "", "base64")],
      [0, 1, 254],
    );
  });

  test("request headers reach the server, binary ones as bytes, reserved ones not doubled", async () => {
    seen.length = 0;
    await createClient(EchoService, grpcJs()).echo(
      { message: "hi" },
      {
        headers: {
          "x-request-id": "req-7",
          "x-caller": "orders",
          "x-trace-bin": Buffer.from([9, 8, 7]).toString("base64"),
          "content-type": "application/json",
          "user-agent": "not-forwarded",
        },
      },
    );
    const header = seen[0]?.header;
    assert.ok(header);
    assert.equal(header.get("x-request-id"), "req-7");
    assert.equal(header.get("x-caller"), "orders");
    assert.deepEqual([...Buffer.from(header.get("x-trace-bin") ?? "", "base64")], [9, 8, 7]);
    // Sent, these would have made the server refuse the call or misreport the client.
    assert.notEqual(header.get("content-type"), "application/json");
    assert.match(header.get("user-agent") ?? "", /^grpc-node-js\//);
  });

  test("a validation error arrives with the same code, message and Violations details", async () => {
    const { viaGrpcJs, viaConnect } = await bothFail((t) =>
      createClient(EchoService, t).echo({ message: "" }),
    );
    assert.equal(viaGrpcJs.code, Code.InvalidArgument);
    assert.deepEqual(shape(viaGrpcJs), shape(viaConnect));
    const violations = viaGrpcJs.findDetails(ViolationsSchema);
    assert.equal(violations.length, 1);
    assert.deepEqual(violations, viaConnect.findDetails(ViolationsSchema));
    assert.equal(violations[0]?.violations[0]?.ruleId, "string.min_len");
  });

  test("an ErrorInfo and the error's trailers arrive as through connect-node", async () => {
    const { viaGrpcJs, viaConnect } = await bothFail((t) =>
      createClient(EchoService, t).echo({ message: "info: pay" }),
    );
    assert.equal(viaGrpcJs.code, Code.FailedPrecondition);
    assert.equal(viaGrpcJs.rawMessage, "card declined: insufficient funds");
    assert.deepEqual(shape(viaGrpcJs), shape(viaConnect));
    const [info] = errorInfosOf(viaGrpcJs);
    assert.equal(info?.reason, "CARD_DECLINED");
    assert.equal(info.metadata.decline_code, "insufficient_funds");
    assert.deepEqual(errorInfosOf(viaGrpcJs), errorInfosOf(viaConnect));
    assert.equal(viaGrpcJs.metadata.get("x-error-trailer"), "e1");
    for (const key of ["x-error-trailer", "grpc-status", "grpc-status-details-bin"]) {
      assert.equal(viaGrpcJs.metadata.get(key), viaConnect.metadata.get(key), key);
    }
  });

  test("a handler's own status code and message come through unchanged", async () => {
    const { viaGrpcJs, viaConnect } = await bothFail((t) =>
      createClient(EchoService, t).echo({ message: "a/b: 100% c,d", failWithCode: Code.NotFound }),
    );
    assert.equal(viaGrpcJs.code, Code.NotFound);
    assert.equal(viaGrpcJs.rawMessage, "asked to fail: a/b: 100% c,d");
    assert.deepEqual(shape(viaGrpcJs), shape(viaConnect));
  });

  test("a call that outlives its timeout fails DEADLINE_EXCEEDED, and the server knew the deadline", async () => {
    seen.length = 0;
    const started = Date.now();
    const { viaGrpcJs, viaConnect } = await bothFail((t) =>
      createClient(EchoService, t).echo({ message: "slow", delayMs: 5000 }, { timeoutMs: 200 }),
    );
    assert.ok(Date.now() - started < 2000, "both calls ended near their deadline");
    assert.equal(viaGrpcJs.code, Code.DeadlineExceeded);
    assert.deepEqual(shape(viaGrpcJs), shape(viaConnect));
    const server = seen[0];
    assert.ok(server?.timeoutMs !== undefined && server.timeoutMs <= 200, `${server?.timeoutMs}`);
    await server.aborted;
  });

  test("aborting the caller's signal cancels the call on the server with CANCELED", async () => {
    for (const t of [grpcJs(), connectNode()]) {
      seen.length = 0;
      const controller = new AbortController();
      const pending = createClient(EchoService, t).echo(
        { message: "hang", delayMs: 5000 },
        { signal: controller.signal },
      );
      while (seen.length === 0) await sleep(5);
      controller.abort();
      const err = await failure(pending);
      assert.equal(err.code, Code.Canceled);
      assert.equal(err.rawMessage, "This operation was aborted");
      // The stream was reset: the handler's signal fires long before its 5 s sleep ends.
      await Promise.race([
        seen[0]?.aborted,
        sleep(2000).then(() => assert.fail("the server never saw the cancellation")),
      ]);
    }
  });

  test("a signal aborted with a reason rejects with that reason, before any request", async () => {
    seen.length = 0;
    const reason = new ConnectError("caller hung up", Code.Canceled);
    const err = await failure(
      createClient(EchoService, grpcJs()).echo(
        { message: "never" },
        { signal: AbortSignal.abort(reason) },
      ),
    );
    assert.equal(err, reason);
    assert.equal(seen.length, 0);
  });

  test("interceptors run in Connect's order and see the request, the response and errors", async () => {
    const log: string[] = [];
    const outer: Interceptor = (next) => async (req) => {
      log.push(`outer ${req.service.typeName}/${req.method.name}`);
      req.header.set("x-from-interceptor", "yes");
      try {
        const res = await next(req);
        log.push(`outer ok ${res.header.get("x-answer-header")}`);
        return res;
      } catch (e) {
        log.push(`outer error ${ConnectError.from(e).code}`);
        throw e;
      }
    };
    const inner: Interceptor = (next) => async (req) => {
      log.push(`inner ${req.header.get("x-from-interceptor")}`);
      // A new request object, as interceptors commonly make: the transport must send it.
      return next({ ...req, header: new Headers([...req.header, ["x-inner", "2"]]) });
    };
    const client = createClient(EchoService, grpcJs([outer, inner]));
    seen.length = 0;
    await client.echo({ message: "headers: x" });
    assert.equal(seen[0]?.header.get("x-from-interceptor"), "yes");
    assert.equal(seen[0]?.header.get("x-inner"), "2");
    await failure(client.echo({ message: "" }));
    assert.deepEqual(log, [
      "outer meshmart.echo.v1.EchoService/Echo",
      "inner yes",
      "outer ok h1",
      "outer meshmart.echo.v1.EchoService/Echo",
      "inner yes",
      `outer error ${Code.InvalidArgument}`,
    ]);
  });

  test("an interceptor's req.signal aborts at the deadline and ends the call, as Connect's does", async () => {
    let signal: AbortSignal | undefined;
    const watcher: Interceptor = (next) => async (req) => {
      signal = req.signal;
      return next(req);
    };
    const err = await failure(
      createClient(EchoService, grpcJs([watcher])).echo(
        { message: "slow", delayMs: 5000 },
        { timeoutMs: 150 },
      ),
    );
    assert.equal(err.code, Code.DeadlineExceeded);
    assert.equal(signal?.aborted, true);
    assert.equal(signal.reason, err);
  });

  test("an interceptor's own signal governs the call", async () => {
    const controller = new AbortController();
    const swap: Interceptor = (next) => async (req) => next({ ...req, signal: controller.signal });
    seen.length = 0;
    const pending = createClient(EchoService, grpcJs([swap])).echo({
      message: "hang",
      delayMs: 5000,
    });
    while (seen.length === 0) await sleep(5);
    controller.abort(new ConnectError("interceptor gave up", Code.Aborted));
    const err = await failure(pending);
    assert.equal(err.code, Code.Aborted);
    assert.equal(err.rawMessage, "interceptor gave up");
  });

  test("an unreachable server fails UNAVAILABLE, as through connect-node", async () => {
    const { viaGrpcJs, viaConnect } = {
      viaGrpcJs: await failure(
        createClient(EchoService, grpcJs([], "http://127.0.0.1:1")).echo({ message: "x" }),
      ),
      viaConnect: await failure(
        createClient(EchoService, connectNode("http://127.0.0.1:1")).echo({ message: "x" }),
      ),
    };
    assert.equal(viaGrpcJs.code, Code.Unavailable);
    assert.equal(viaGrpcJs.code, viaConnect.code);
  });

  test("server streaming still works, through connect-node", async () => {
    const got: number[] = [];
    for await (const res of createClient(EchoService, grpcJs()).echoStream({
      message: "s",
      repeat: 3,
    })) {
      got.push(res.index);
    }
    assert.deepEqual(got, [0, 1, 2]);
  });
});
