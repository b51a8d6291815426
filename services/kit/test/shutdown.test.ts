import assert from "node:assert/strict";
import { test } from "node:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { EchoService, echoRoutes } from "../src/testing/echo.js";
import { startTestHost } from "../src/testing/host.js";

test("close() lets in-flight calls on both ports finish, then refuses new ones", async () => {
  const host = await startTestHost({ routes: echoRoutes, env: { SHUTDOWN_GRACE_MS: "5000" } });
  const grpc = createClient(
    EchoService,
    createGrpcTransport({ baseUrl: `http://${host.grpcTarget}` }),
  );
  const connect = createClient(
    EchoService,
    createConnectTransport({ baseUrl: host.httpUrl, httpVersion: "1.1" }),
  );
  // Warm the connections so the calls below are in flight when close() starts.
  await grpc.echo({ message: "warm" });
  const inFlight = [
    grpc.echo({ message: "grpc", delayMs: 600 }),
    connect.echo({ message: "connect", delayMs: 600 }),
  ];
  await new Promise((r) => setTimeout(r, 150));
  const started = Date.now();
  const closed = host.close();
  const ready = await fetch(`${host.adminUrl}/readyz`).then(
    (r) => r.status,
    () => 0,
  );
  assert.ok(ready === 503 || ready === 0, "not ready while draining");
  const results = await Promise.all(inFlight);
  assert.deepEqual(
    results.map((r) => r.message),
    ["grpc", "connect"],
  );
  await closed;
  assert.ok(
    Date.now() - started < 4000,
    "closed once in-flight calls were done, well inside the grace",
  );
  const fresh = createClient(
    EchoService,
    createGrpcTransport({ baseUrl: `http://${host.grpcTarget}` }),
  );
  await assert.rejects(fresh.echo({ message: "late" }, { timeoutMs: 1000 }), (err: unknown) => {
    const code = ConnectError.from(err).code;
    return code === Code.Unavailable || code === Code.DeadlineExceeded;
  });
});

test("calls still running when the grace period ends are cut off", async () => {
  const host = await startTestHost({ routes: echoRoutes, env: { SHUTDOWN_GRACE_MS: "300" } });
  const grpc = createClient(
    EchoService,
    createGrpcTransport({ baseUrl: `http://${host.grpcTarget}` }),
  );
  await grpc.echo({ message: "warm" });
  const slow = grpc.echo({ message: "too slow", delayMs: 10_000 }).then(
    () => "completed",
    (err: unknown) => ConnectError.from(err).code,
  );
  await new Promise((r) => setTimeout(r, 100));
  const started = Date.now();
  await host.close();
  assert.ok(Date.now() - started < 2000);
  assert.notEqual(await slow, "completed");
});
