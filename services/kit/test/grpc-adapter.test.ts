import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createClient, type Interceptor, type ServiceImpl } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { addServicesToGrpcServer, metadataToHeaders } from "../src/server/grpc-adapter.js";
import { EchoService, echoImpl } from "../src/testing/echo.js";

// The adapter builds the interceptor chain once per method and keeps the call's context on
// the objects it hands out, and request headers stay a plain map until something needs
// real Headers. These check that interceptors replacing the request or the response, and
// code using the headers as a real Headers, see what Connect's own handlers would give them.

test("request metadata reads as Headers before and after it becomes a real Headers", () => {
  const metadata = new grpc.Metadata();
  metadata.add("X-Request-Id", "abc");
  metadata.add("trace-bin", Buffer.from([1, 2, 3]));
  metadata.add("x-many", "first");
  metadata.add("x-many", "second");
  const headers = metadataToHeaders(metadata);
  assert.ok(headers instanceof Headers);
  assert.equal(headers.get("x-request-id"), "abc");
  assert.equal(headers.get("X-REQUEST-ID"), "abc");
  assert.equal(headers.has("Trace-Bin"), true);
  assert.equal(headers.get("trace-bin"), Buffer.from([1, 2, 3]).toString("base64"));
  // Only the first value of a repeated key, as the adapter always did.
  assert.equal(headers.get("x-many"), "first");
  assert.equal(headers.get("absent"), null);
  assert.equal(headers.has("absent"), false);
  assert.deepEqual(Object.fromEntries(new Headers(headers)), {
    "trace-bin": "AQID",
    "x-many": "first",
    "x-request-id": "abc",
  });
  headers.set("x-request-id", "changed");
  headers.append("x-added", "1");
  assert.equal(headers.get("x-request-id"), "changed");
  assert.deepEqual([...headers.keys()], ["trace-bin", "x-added", "x-many", "x-request-id"]);
  const seen: string[] = [];
  headers.forEach((value, key) => {
    seen.push(`${key}=${value}`);
  });
  assert.deepEqual(seen, ["trace-bin=AQID", "x-added=1", "x-many=first", "x-request-id=changed"]);
  headers.delete("x-many");
  assert.equal(headers.has("x-many"), false);
});

let server: grpc.Server;
let port: number;
const handlerSaw: { tag: string | null }[] = [];
const calls = { replaced: 0 };

/** Passes on a new request object (a spread, with its own header) as some interceptors do. */
const replaceRequest: Interceptor = (next) => async (req) => {
  calls.replaced++;
  const header = new Headers(req.header);
  header.set("x-tag", "replaced");
  return next({ ...req, header });
};

/** Answers with a copy of the response carrying headers and trailers of its own. */
const ownResponse: Interceptor = (next) => async (req) => {
  const res = await next(req);
  return {
    ...res,
    header: new Headers({ "x-own-header": "h" }),
    trailer: new Headers({ "x-own-trailer": "t" }),
  };
};

const shutdown = new AbortController();

const impl: ServiceImpl<typeof EchoService> = {
  async echo(req, ctx) {
    handlerSaw.push({ tag: ctx.requestHeader.get("x-tag") });
    return echoImpl.echo(req, ctx);
  },
  echoStream: (req, ctx) => echoImpl.echoStream(req, ctx),
};

before(async () => {
  server = new grpc.Server();
  addServicesToGrpcServer(
    server,
    [
      {
        desc: EchoService,
        impl,
      },
    ],
    {
      interceptors: [ownResponse, replaceRequest],
      shutdownSignal: shutdown.signal,
      maxMessageBytes: 1 << 20,
      maxDeadlineMs: 5_000,
    },
  );
  port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
});

after(async () => {
  shutdown.abort();
  await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
});

test("interceptors replacing the request and the response work through the chain built once", async () => {
  const client = createClient(
    EchoService,
    createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` }),
  );
  for (let i = 0; i < 3; i++) {
    let header: Headers | undefined;
    let trailer: Headers | undefined;
    const res = await client.echo(
      { message: `call ${i}` },
      {
        onHeader: (h) => {
          header = h;
        },
        onTrailer: (t) => {
          trailer = t;
        },
      },
    );
    assert.equal(res.message, `call ${i}`);
    assert.equal(header?.get("x-own-header"), "h");
    assert.equal(trailer?.get("x-own-trailer"), "t");
  }
  // The handler saw the replaced request's header, on every call.
  assert.deepEqual(
    handlerSaw.map((s) => s.tag),
    ["replaced", "replaced", "replaced"],
  );
  assert.equal(calls.replaced, 3);
  // Failures still come back as gRPC errors through the same chain.
  await assert.rejects(client.echo({ message: "boom", failWithCode: 5 }), /asked to fail: boom/);
});
