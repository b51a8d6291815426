/**
 * Every answer Envoy makes up itself (no route, no token, body or headers too large, rate
 * limited, no upstream, upstream too slow) in the shape the caller's protocol expects:
 * google.rpc.Status JSON on REST paths, a Connect error for Connect unary calls, an
 * end-of-stream message in a 200 for Connect streams, and a status in gRPC's own terms.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { connect as connectH2 } from "node:http2";
import { createServer, type Server, type Socket } from "node:net";
import { after, before, describe, test } from "node:test";
import { Code } from "@connectrpc/connect";
import { envelope } from "@meshmart/kit/testing";
import { startTestEdge, type TestEdge } from "../../tests/support/envoy-edge.js";
import { MAX_REQUEST_BODY_BYTES, MAX_REQUEST_HEADERS_KB, RATE_LIMITS } from "../envoy/generate.js";
import { NO_PORT, raw, type SendInit, send } from "./support/http.js";
import { type JwksIssuer, startJwksIssuer } from "./support/jwks-issuer.js";

const LOGIN_BURST = RATE_LIMITS.methods["meshmart.identity.v1.IdentityService.Login"]?.burst ?? 0;
/** Asks Envoy to give up on the upstream after 300 ms (gRPC's timeout header, honoured). */
const SHORT_DEADLINE = { "grpc-timeout": "300m" };

/** A TCP server that accepts and never answers: an upstream that hangs. */
async function startBlackhole(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  assert.ok(address !== null && typeof address === "object");
  return {
    port: address.port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

describe("Envoy's own answers", { timeout: 90_000 }, () => {
  let issuer: JwksIssuer;
  let blackhole: Awaited<ReturnType<typeof startBlackhole>>;
  let edge: TestEdge;
  let token: string;

  before(async () => {
    [issuer, blackhole] = await Promise.all([startJwksIssuer(), startBlackhole()]);
    edge = await startTestEdge({
      services: new Map([
        // catalog: nothing listens (503); orders: it listens and never answers (504).
        ["catalog", { grpc: NO_PORT, http: NO_PORT }],
        ["orders", { grpc: blackhole.port, http: blackhole.port }],
        ["identity", { grpc: NO_PORT, http: issuer.port }],
      ]),
    });
    token = await issuer.token({});
  });

  after(async () => {
    await edge?.close();
    await blackhole?.close();
    await issuer?.close();
  });

  const bearer = () => ({ authorization: `Bearer ${token}` });
  /** Calls until the edge refuses one (the bucket is per address: each caller its own). */
  async function untilRefused(init: SendInit) {
    for (let i = 0; i <= 3 * LOGIN_BURST; i++) {
      const res = await send(edge.port, init);
      if (res.status === 429) return res;
    }
    assert.fail(`${init.path} was never rate limited`);
  }

  describe("on REST paths: google.rpc.Status JSON", () => {
    const rows: [string, () => Promise<{ status: number; body: string }>, number, number][] = [
      ["bad query parameter (transcoder)", () => get("/v1/products?colour=red"), 400, 3],
      [
        "bad request line (codec)",
        () => raw(edge.port, "GET /v1/\0 HTTP/1.1\r\nHost: x\r\n\r\n"),
        400,
        3,
      ],
      ["no token (jwt_authn)", () => get("/v1/orders"), 401, 16],
      ["no such binding (transcoder)", () => get("/v1/nothing"), 404, 5],
      ["no such route (router)", () => send(edge.port, { method: "POST", path: "/cart" }), 404, 5],
      [
        "body too large (buffer)",
        () =>
          send(edge.port, {
            method: "POST",
            path: "/v1/products",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ name: "x".repeat(MAX_REQUEST_BODY_BYTES) }),
          }),
        413,
        8,
      ],
      [
        "HTTP/1.0 (codec)",
        () => raw(edge.port, "GET /v1/categories HTTP/1.0\r\nHost: x\r\n\r\n"),
        426,
        2,
      ],
      [
        "rate limited (local_ratelimit)",
        () =>
          untilRefused({
            method: "POST",
            path: "/v1/sessions",
            headers: { "content-type": "application/json" },
            body: "{}",
            localAddress: "127.0.1.1",
          }),
        429,
        8,
      ],
      [
        "headers too large (codec)",
        () =>
          send(edge.port, {
            method: "GET",
            path: "/v1/categories",
            headers: { "x-big": "a".repeat(MAX_REQUEST_HEADERS_KB * 1024) },
          }),
        431,
        8,
      ],
      ["no upstream (router)", () => get("/v1/categories"), 503, 14],
      [
        "upstream too slow (router)",
        () => get("/v1/orders", { ...bearer(), ...SHORT_DEADLINE }),
        504,
        4,
      ],
    ];
    function get(path: string, headers: Record<string, string> = {}) {
      return send(edge.port, { method: "GET", path, headers });
    }

    for (const [name, request, status, code] of rows) {
      test(`${status} ${name} → {"code":${code},"message":…}`, async () => {
        const res = await request();
        assert.equal(res.status, status, res.body);
        const json = JSON.parse(res.body) as { code: unknown; message: unknown };
        assert.equal(json.code, code, res.body);
        assert.equal(typeof json.message, "string", res.body);
        assert.deepEqual(Object.keys(json).sort(), ["code", "message"]);
        assert.doesNotMatch(res.body, /127\.0\.0\.1/, "no internal addresses");
      });
    }

    test("Envoy answers no 405 and no 415 on REST paths", async () => {
      // A method without a binding is an unknown method: 404, as above.
      assert.equal(
        (await send(edge.port, { method: "PATCH", path: "/v1/categories" })).status,
        404,
      );
      // Any content type is read as JSON by the transcoder.
      const text = await send(edge.port, {
        method: "POST",
        path: "/v1/sessions",
        headers: { "content-type": "text/plain" },
        body: "{}",
        localAddress: "127.0.1.2",
      });
      assert.equal(text.status, 503, "reached the (absent) upstream: the body was taken as JSON");
    });
  });

  describe("on Connect unary calls: a Connect error", () => {
    const connect = (path: string, headers: Record<string, string> = {}, localAddress?: string) =>
      send(edge.port, {
        method: "POST",
        path,
        headers: {
          "content-type": "application/json",
          "connect-protocol-version": "1",
          ...headers,
        },
        body: "{}",
        ...(localAddress === undefined ? {} : { localAddress }),
      });
    const rows: [string, () => Promise<{ status: number; body: string }>, number, string][] = [
      [
        "no token",
        () => connect("/meshmart.orders.v1.OrderService/ListOrders"),
        401,
        "unauthenticated",
      ],
      [
        "unpublished service",
        () => connect("/meshmart.inventory.v1.InventoryService/GetStock"),
        404,
        "not_found",
      ],
      [
        "rate limited",
        () =>
          untilRefused({
            method: "POST",
            path: "/meshmart.identity.v1.IdentityService/Login",
            headers: { "content-type": "application/json", "connect-protocol-version": "1" },
            body: "{}",
            localAddress: "127.0.1.3",
          }),
        429,
        "resource_exhausted",
      ],
      [
        "no upstream",
        () => connect("/meshmart.catalog.v1.CatalogService/ListCategories"),
        503,
        "unavailable",
      ],
      [
        "a Connect GET with no upstream",
        () =>
          send(edge.port, {
            method: "GET",
            path: "/meshmart.catalog.v1.CatalogService/ListCategories?connect=v1&encoding=json&message=%7B%7D",
          }),
        503,
        "unavailable",
      ],
    ];
    for (const [name, request, status, code] of rows) {
      test(`${status} ${name} → {"code":"${code}",…}`, async () => {
        const res = await request();
        assert.equal(res.status, status, res.body);
        const json = JSON.parse(res.body) as { code: unknown; message: unknown };
        assert.equal(json.code, code, res.body);
        assert.equal(typeof json.message, "string");
      });
    }
  });

  describe("on gRPC-Web: Envoy's HTTP status, and a grpc-status header derived from it", () => {
    const grpcWeb = (path: string, localAddress?: string) =>
      send(edge.port, {
        method: "POST",
        path,
        headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1" },
        body: envelope(new Uint8Array()),
        ...(localAddress === undefined ? {} : { localAddress }),
      });
    const rows: [
      string,
      () => Promise<{ status: number; headers: Record<string, unknown> }>,
      number,
      Code,
    ][] = [
      [
        "no token",
        () => grpcWeb("/meshmart.orders.v1.OrderService/ListOrders"),
        401,
        Code.Unauthenticated,
      ],
      [
        "unpublished service",
        () => grpcWeb("/grpc.health.v1.Health/Check"),
        404,
        Code.Unimplemented,
      ],
      // grpc_web maps the HTTP status, as gRPC-Web clients do: 429 is Unavailable here.
      [
        "rate limited",
        () =>
          untilRefused({
            method: "POST",
            path: "/meshmart.identity.v1.IdentityService/Login",
            headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1" },
            body: envelope(new Uint8Array()),
            localAddress: "127.0.1.4",
          }),
        429,
        Code.Unavailable,
      ],
      [
        "no upstream",
        () => grpcWeb("/meshmart.catalog.v1.CatalogService/ListCategories"),
        503,
        Code.Unavailable,
      ],
    ];
    for (const [name, request, status, code] of rows) {
      test(`${status} ${name} → grpc-status ${code} (${Code[code]})`, async () => {
        const res = await request();
        assert.equal(res.status, status);
        assert.equal(res.headers["content-type"], "application/grpc-web+proto");
        assert.equal(res.headers["grpc-status"], String(code));
        assert.ok(String(res.headers["grpc-message"] ?? "").length > 0);
      });
    }
  });

  describe("on gRPC: a status of gRPC's own", () => {
    /** A unary gRPC call with an empty request, over HTTP/2 prior knowledge. */
    function grpc(path: string, headers: Record<string, string> = {}) {
      return new Promise<{ http: number; status: string | undefined; message: string }>(
        (resolve, reject) => {
          const session = connectH2(edge.url);
          session.on("error", reject);
          const req = session.request({
            ":method": "POST",
            ":path": path,
            "content-type": "application/grpc",
            te: "trailers",
            ...headers,
          });
          let http = 0;
          let status: string | undefined;
          let message = "";
          const take = (h: Record<string, unknown>) => {
            if (h["grpc-status"] !== undefined) status = String(h["grpc-status"]);
            if (h["grpc-message"] !== undefined)
              message = decodeURIComponent(String(h["grpc-message"]));
          };
          req.on("response", (h) => {
            http = Number(h[":status"]);
            take(h);
          });
          req.on("trailers", take);
          req.on("data", () => {});
          req.on("end", () => {
            session.close();
            resolve({ http, status, message });
          });
          req.on("error", reject);
          req.end(envelope(new Uint8Array()));
        },
      );
    }
    const rows: [string, () => ReturnType<typeof grpc>, Code][] = [
      ["no token", () => grpc("/meshmart.orders.v1.OrderService/ListOrders"), Code.Unauthenticated],
      ["unpublished service", () => grpc("/grpc.health.v1.Health/Check"), Code.Unimplemented],
      [
        "no upstream",
        () => grpc("/meshmart.catalog.v1.CatalogService/ListCategories"),
        Code.Unavailable,
      ],
      [
        "upstream too slow",
        () =>
          grpc("/meshmart.orders.v1.OrderService/ListOrders", { ...bearer(), ...SHORT_DEADLINE }),
        Code.DeadlineExceeded,
      ],
    ];
    for (const [name, request, code] of rows) {
      test(`${name} → grpc-status ${code} (${Code[code]})`, async () => {
        const res = await request();
        assert.equal(res.http, 200);
        assert.equal(res.status, String(code), res.message);
        assert.ok(res.message.length > 0);
      });
    }
  });
});
