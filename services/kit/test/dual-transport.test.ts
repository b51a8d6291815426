import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { ViolationsSchema } from "../gen/buf/validate/validate_pb.js";
import { createTestIssuer, type TestIssuer } from "../src/testing/auth.js";
import { EchoService, echoRoutes } from "../src/testing/echo.js";
import { startTestHost, type TestHost } from "../src/testing/host.js";

// The same cases run against the gRPC port (grpc-js) and the HTTP port (connect-node,
// both the Connect and gRPC-Web protocols): the kit promises identical behaviour.
let host: TestHost;
let issuer: TestIssuer;

before(async () => {
  issuer = await createTestIssuer();
  host = await startTestHost({
    routes: echoRoutes,
    verifier: issuer.verifier,
    env: { MAX_DEADLINE_MS: "1500" },
  });
});
after(() => host.close());

const transports: Record<string, () => Transport> = {
  "grpc (grpc-js port)": () => createGrpcTransport({ baseUrl: `http://${host.grpcTarget}` }),
  "connect (http port)": () =>
    createConnectTransport({ baseUrl: host.httpUrl, httpVersion: "1.1" }),
  "grpc-web (http port)": () =>
    createGrpcWebTransport({ baseUrl: host.httpUrl, httpVersion: "1.1" }),
};

async function rejection(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    await promise;
  } catch (reason) {
    return ConnectError.from(reason);
  }
  assert.fail("expected the call to fail");
}

for (const [name, makeTransport] of Object.entries(transports)) {
  describe(name, () => {
    const client = () => createClient(EchoService, makeTransport());

    test("unary call succeeds", async () => {
      const res = await client().echo({ message: "hello" });
      assert.equal(res.message, "hello");
    });

    test("a failed call carries the caller's x-request-id back", async () => {
      const err = await rejection(
        client().echo(
          { message: "x", failWithCode: Code.NotFound },
          { headers: { "x-request-id": "req-123" } },
        ),
      );
      assert.equal(err.metadata.get("x-request-id"), "req-123");
    });

    test("validation failure is INVALID_ARGUMENT with field violations", async () => {
      const err = await rejection(client().echo({ message: "" }));
      assert.equal(err.code, Code.InvalidArgument);
      const [violations] = err.findDetails(ViolationsSchema);
      assert.ok(violations, "buf.validate.Violations detail present");
      const paths = violations.violations.map((v) =>
        v.field?.elements.map((e) => e.fieldName).join("."),
      );
      assert.deepEqual(paths, ["message"]);
      assert.equal(violations.violations[0]?.ruleId, "string.min_len");
    });

    test("expected errors keep their code and message", async () => {
      const err = await rejection(client().echo({ message: "gone", failWithCode: Code.NotFound }));
      assert.equal(err.code, Code.NotFound);
      assert.equal(err.rawMessage, "asked to fail: gone");
    });

    test("unexpected errors are masked as INTERNAL and logged with their cause", async () => {
      const err = await rejection(
        client().echo({ message: `s3cr3t-${name}`, failWithCode: Code.Unknown }),
      );
      assert.equal(err.code, Code.Internal);
      assert.equal(err.rawMessage, "internal error");
      assert.doesNotMatch(err.message, /s3cr3t/);
      await new Promise((r) => setTimeout(r, 50));
      const logged = host.logs
        .lines()
        .find(
          (l) =>
            l.msg === "unexpected error in handler" && JSON.stringify(l).includes(`s3cr3t-${name}`),
        );
      assert.ok(logged, "cause logged server-side");
    });

    test("the caller's deadline is enforced", async () => {
      const started = Date.now();
      const err = await rejection(
        client().echo({ message: "slow", delayMs: 2000 }, { timeoutMs: 200 }),
      );
      assert.equal(err.code, Code.DeadlineExceeded);
      assert.ok(Date.now() - started < 1500, "did not wait for the handler");
    });

    test("the server's maximum deadline applies when the caller sets none", async () => {
      const err = await rejection(client().echo({ message: "slower", delayMs: 5000 }));
      assert.equal(err.code, Code.DeadlineExceeded);
    });

    test("a bad bearer token is UNAUTHENTICATED; a good one is accepted", async () => {
      const bad = await rejection(
        client().echo({ message: "x" }, { headers: { authorization: "Bearer not.a.jwt" } }),
      );
      assert.equal(bad.code, Code.Unauthenticated);
      const token = await issuer.token({ roles: ["admin"] });
      const ok = await client().echo(
        { message: "x" },
        { headers: { authorization: `Bearer ${token}` } },
      );
      assert.equal(ok.message, "x");
    });

    test("server streaming delivers every message in order", async () => {
      const got: number[] = [];
      for await (const res of client().echoStream({ message: "s", repeat: 5 })) got.push(res.index);
      assert.deepEqual(got, [0, 1, 2, 3, 4]);
    });
  });
}

test("metrics count each call by method and code on both ports", async () => {
  const text = await (await fetch(`${host.adminUrl}/metrics`)).text();
  const ok =
    /rpc_requests_total\{[^}]*side="server"[^}]*method="Echo"[^}]*code="ok"[^}]*\} (\d+)/.exec(
      text,
    );
  assert.ok(ok && Number(ok[1]) >= 6, `ok count present: ${ok?.[0]}`);
  assert.match(text, /rpc_requests_total\{[^}]*method="Echo"[^}]*code="invalid_argument"/);
  assert.match(text, /rpc_request_duration_seconds_bucket\{/);
});

test("access log lines carry no request bodies", () => {
  const rpcLines = host.logs.lines().filter((l) => l.msg === "rpc" || l.msg === "rpc failed");
  assert.ok(rpcLines.length > 10);
  for (const line of rpcLines) {
    assert.equal(typeof line.rpc, "string");
    assert.equal(typeof line.duration_ms, "number");
    assert.ok(!JSON.stringify(line).includes("hello"), "message body not logged");
  }
});
