import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError, createClient, type ServiceImpl } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createServiceClient, outgoing } from "../src/client.js";
import { callerKey, requestIdKey } from "../src/context.js";
import { createTestIssuer, type TestIssuer } from "../src/testing/auth.js";
import { EchoService, echoImpl } from "../src/testing/echo.js";
import { startTestHost, type TestHost } from "../src/testing/host.js";

// A relay service calls a downstream echo with outgoing(ctx): the caller's deadline,
// request id, trace and token must arrive downstream, and a caller hanging up must cancel it.
let downstream: TestHost;
let relay: TestHost;
let issuer: TestIssuer;
const seen: {
  timeoutMs: number | undefined;
  requestId: string;
  traceparent: string | null;
  userId: string | undefined;
  aborted: Promise<void>;
}[] = [];

before(async () => {
  issuer = await createTestIssuer();
  downstream = await startTestHost({
    verifier: issuer.verifier,
    routes: (router) => {
      const impl: ServiceImpl<typeof EchoService> = {
        async echo(req, ctx) {
          seen.push({
            timeoutMs: ctx.timeoutMs(),
            requestId: ctx.values.get(requestIdKey),
            traceparent: ctx.requestHeader.get("traceparent"),
            userId: ctx.values.get(callerKey)?.userId,
            aborted: new Promise((resolve) =>
              ctx.signal.addEventListener("abort", () => resolve(), { once: true }),
            ),
          });
          return echoImpl.echo(req, ctx);
        },
        echoStream: (req, ctx) => echoImpl.echoStream(req, ctx),
      };
      router.service(EchoService, impl);
    },
  });
  const next = createServiceClient(EchoService, `http://${downstream.grpcTarget}`, {
    service: "relay",
  });
  relay = await startTestHost({
    verifier: issuer.verifier,
    routes: (router) => {
      router.service(EchoService, {
        echo: (req, ctx) => next.echo(req, outgoing(ctx)),
      });
    },
  });
});
after(async () => {
  await relay.close();
  await downstream.close();
});

const client = () =>
  createClient(EchoService, createGrpcTransport({ baseUrl: `http://${relay.grpcTarget}` }));

test("the remaining deadline, the request id and the trace reach the downstream call", async () => {
  const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
  seen.length = 0;
  await client().echo(
    { message: "hop" },
    {
      timeoutMs: 2000,
      headers: { "x-request-id": "chain-1", traceparent: `00-${traceId}-00f067aa0ba902b7-01` },
    },
  );
  const [hop] = seen;
  assert.ok(hop);
  assert.ok(
    hop.timeoutMs !== undefined && hop.timeoutMs > 0 && hop.timeoutMs <= 2000,
    `timeout ${hop.timeoutMs}`,
  );
  assert.equal(hop.requestId, "chain-1");
  assert.match(hop.traceparent ?? "", new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`));
  // Both services logged the call under the caller's trace id.
  for (const host of [relay, downstream]) {
    const line = host.logs.lines().find((l) => l.msg === "rpc" && l.request_id === "chain-1");
    assert.equal(line?.trace_id, traceId);
  }
});

test("a downstream call that would outlive its caller is cut at the caller's deadline", async () => {
  const started = Date.now();
  const err = await client()
    .echo({ message: "slow hop", delayMs: 3000 }, { timeoutMs: 300 })
    .then(
      () => assert.fail("expected DEADLINE_EXCEEDED"),
      (e: unknown) => ConnectError.from(e),
    );
  assert.equal(err.code, Code.DeadlineExceeded);
  assert.ok(Date.now() - started < 1500);
  // The downstream handler saw its budget, not the server's 30 s maximum.
  const last = seen.at(-1);
  assert.ok(last?.timeoutMs !== undefined && last.timeoutMs <= 300);
});

test("the caller's verified token reaches the downstream call", async () => {
  seen.length = 0;
  const token = await issuer.token({ sub: "user-42" });
  await client().echo({ message: "as me" }, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(seen[0]?.userId, "user-42");
});

test("a caller hanging up cancels the downstream call", async () => {
  seen.length = 0;
  const controller = new AbortController();
  const pending = client().echo({ message: "hang", delayMs: 5000 }, { signal: controller.signal });
  while (seen.length === 0) await sleep(5);
  controller.abort();
  await assert.rejects(pending, (e: unknown) => ConnectError.from(e).code === Code.Canceled);
  await Promise.race([
    seen[0]?.aborted,
    sleep(2000).then(() => assert.fail("the downstream call was not cancelled")),
  ]);
});
