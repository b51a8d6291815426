/**
 * The mesh's retry and timeout policy, by behaviour: real Envoy sidecars generated from
 * istio/ (the edge's, and identity's in front of a replica that misbehaves on purpose),
 * counting attempts where the replica receives them.
 *
 * The replica is a bare HTTP/2 server on identity's app port, not identity: it has to lose
 * each response after receiving the request (as a replica killed mid-call would) or never
 * answer, every time, which a real service cannot be made to do on cue.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import {
  createServer,
  type Http2Server,
  constants as h2,
  type ServerHttp2Session,
} from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { IdentityService } from "@meshmart/kit/gen/meshmart/identity/v1/identity_service_pb.js";
import { freePort } from "@meshmart/kit/testing";
import { loadCallGraph } from "../../scripts/deploy/callgraph.js";
import { RETRY_ATTEMPTS } from "../../scripts/deploy/manifests.js";
import { toolPath } from "../../scripts/lib/tools.js";
import {
  type LocalMesh,
  planLocalMesh,
  type RunningSidecar,
  startSidecar,
} from "../../scripts/mesh/local-mesh.js";

const graph = loadCallGraph();
const identityMethods = graph.services.get("identity")?.methods;
const spec = (method: string) => {
  const found = identityMethods?.get(method);
  if (found === undefined) throw new Error(`identity has no ${method} in the graph`);
  return found;
};

type Mode = "lose-response" | "never-answer";
let mode: Mode = "lose-response";
const attempts = new Map<string, number>();
let replica: Http2Server;
const sessions = new Set<ServerHttp2Session>();
let dir: string;
let layout: LocalMesh;
const sidecars: RunningSidecar[] = [];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "meshmart-retry-"));
  layout = await planLocalMesh({ services: ["identity"], edge: true, dir, freePort });
  const identity = layout.instancesOf("identity")[0];
  if (identity?.app === undefined) throw new Error("no identity instance");
  replica = createServer();
  replica.on("session", (session) => sessions.add(session));
  replica.on("stream", (stream, headers) => {
    const path = String(headers[":path"]);
    attempts.set(path, (attempts.get(path) ?? 0) + 1);
    // Read the request, then lose the answer: the stream is reset, no response headers.
    stream.on("data", () => {});
    stream.on("error", () => {});
    if (mode === "lose-response") stream.on("end", () => stream.close(h2.NGHTTP2_INTERNAL_ERROR));
  });
  await new Promise<void>((resolve) => replica.listen(identity.app?.grpc, "127.0.0.1", resolve));
  const envoy = toolPath("envoy");
  for (const instance of layout.instances) sidecars.push(await startSidecar(envoy, instance));
});

after(async () => {
  await Promise.all(sidecars.map((s) => s.envoy.close()));
  // Envoy keeps its upstream connections open; close() alone would wait for them.
  for (const session of sessions) session.destroy();
  await new Promise((resolve) => replica?.close(resolve));
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

/** identity as the edge calls it: plaintext to the edge's sidecar, mTLS from there. */
function identityViaEdge() {
  const port = layout.edgeUpstreams().get("identity")?.grpc;
  return createClient(
    IdentityService,
    createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` }),
  );
}

const path = (method: string) => `/meshmart.identity.v1.IdentityService/${method}`;

async function failure(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (error) {
    return ConnectError.from(error);
  }
  assert.fail("the call succeeded");
}

describe("retries follow the graph: idempotent methods only", () => {
  test("Login (not idempotent) reaches the replica once when its response is lost", async () => {
    assert.equal(spec("Login").idempotent, false);
    mode = "lose-response";
    const error = await failure(
      identityViaEdge().login({ email: "a@example.com", password: "correct horse" }),
    );
    assert.equal(error.code, Code.Unavailable, error.message);
    assert.equal(attempts.get(path("Login")), 1, "the mesh must not repeat a login");
  });

  test("GetJwks (idempotent) reaches it 1 + RETRY_ATTEMPTS times, each on a fresh try", async () => {
    assert.equal(spec("GetJwks").idempotent, true);
    mode = "lose-response";
    const error = await failure(identityViaEdge().getJwks({}));
    assert.equal(error.code, Code.Unavailable, error.message);
    assert.equal(attempts.get(path("GetJwks")), 1 + RETRY_ATTEMPTS);
    const edge = sidecars.find((s) => s.instance.workload === "edge");
    const retried = await edge?.envoy.stat(
      "cluster.outbound|9000||identity.meshmart.svc.cluster.local.upstream_rq_retry",
    );
    assert.ok((retried ?? 0) >= RETRY_ATTEMPTS, `edge sidecar counted ${retried} retries`);
  });
});

describe("timeouts follow the graph", { timeout: 30_000 }, () => {
  test("a call that never gets an answer ends at its route timeout", async () => {
    mode = "never-answer";
    // Two at once: RefreshToken has no retries, GetMe three tries of timeout/3 each; both
    // must end at the method's timeout, neither earlier nor much later.
    const cases = ["RefreshToken", "GetMe"] as const;
    const client = identityViaEdge();
    const results = await Promise.all(
      cases.map(async (method) => {
        const started = performance.now();
        const call =
          method === "RefreshToken" ? client.refreshToken({ refreshToken: "x" }) : client.getMe({});
        const error = await failure(call);
        return { method, error, ms: performance.now() - started };
      }),
    );
    for (const { method, error, ms } of results) {
      const timeoutMs = spec(method).timeoutMs;
      assert.ok(
        [Code.DeadlineExceeded, Code.Unavailable].includes(error.code),
        `${method}: ${error.code} ${error.message}`,
      );
      assert.ok(
        ms >= timeoutMs * 0.95 && ms < timeoutMs + 1_500,
        `${method} ended after ${Math.round(ms)} ms; its route timeout is ${timeoutMs} ms`,
      );
      const expected = spec(method).idempotent ? 1 + RETRY_ATTEMPTS : 1;
      assert.equal(attempts.get(path(method)), expected, `${method} attempts`);
    }
  });
});
