/**
 * The local REST edge: a stand-in for Envoy's grpc_json_transcoder + jwt_authn + CORS, for
 * `make up` and tests. Applies the google.api.http rules of the public services, checks
 * tokens per route, calls the services' gRPC ports, and answers errors exactly as Envoy
 * does with convert_grpc_status.
 */

import { randomUUID } from "node:crypto";
import { once } from "node:events";
import {
  createServer,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type ServerResponse,
} from "node:http";
import { createServer as createHttp2Server, type Http2Server, type Http2Session } from "node:http2";
import type { AddressInfo } from "node:net";
import {
  createRegistry,
  type DescFile,
  type DescMethodServerStreaming,
  type DescMethodUnary,
  type Registry,
} from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import {
  createJwtVerifier,
  createLogDestination,
  createRedis,
  type TokenVerifier,
} from "@meshmart/kit";
import { file_buf_validate_validate } from "@meshmart/kit/gen/buf/validate/validate_pb.js";
import { file_meshmart_catalog_v1_catalog_service } from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_service_pb.js";
import { file_meshmart_identity_v1_identity_service } from "@meshmart/kit/gen/meshmart/identity/v1/identity_service_pb.js";
import { file_meshmart_notifications_v1_notifications_service } from "@meshmart/kit/gen/meshmart/notifications/v1/notifications_service_pb.js";
import { file_meshmart_orders_v1_orders_service } from "@meshmart/kit/gen/meshmart/orders/v1/orders_service_pb.js";
import type { DestinationStream } from "pino";
import { pino } from "pino";
import type { EdgeConfig } from "./config.js";
import { EdgeError, errorResponse } from "./errors.js";
import {
  bindingsFromFiles,
  createHttpRouter,
  type HttpBinding,
  PathDecodeError,
} from "./http-rules.js";
import { sendJsonArrayStream } from "./json-array-stream.js";
import { openApiHandler } from "./openapi.js";
import {
  createGlobalLimiter,
  createLocalLimiter,
  type GlobalLimiter,
  type Verdict,
} from "./rate-limit.js";
import { createStaticSite } from "./static-site.js";
import { BadRequestError, buildRequest, responseJson } from "./transcode.js";
import { createUpstreams } from "./upstreams.js";

export { type EdgeConfig, edgeConfigSchema } from "./config.js";

/** The four public services' files: the same rules Envoy is configured from. */
export const publicFiles: readonly DescFile[] = [
  file_meshmart_catalog_v1_catalog_service,
  file_meshmart_identity_v1_identity_service,
  file_meshmart_orders_v1_orders_service,
  file_meshmart_notifications_v1_notifications_service,
];

/** RPCs reachable without a token; every other route needs a valid access token. */
export const publicMethods: ReadonlySet<string> = new Set([
  "meshmart.catalog.v1.CatalogService.GetProduct",
  "meshmart.catalog.v1.CatalogService.ListProducts",
  "meshmart.catalog.v1.CatalogService.ListCategories",
  "meshmart.identity.v1.IdentityService.SignUp",
  "meshmart.identity.v1.IdentityService.Login",
  "meshmart.identity.v1.IdentityService.RefreshToken",
  "meshmart.identity.v1.IdentityService.GetJwks",
]);

/** Fully-qualified RPC name of a binding. */
export function rpcName(binding: HttpBinding): string {
  return `${binding.method.parent.typeName}.${binding.method.name}`;
}

/** The upstream name of a service: its package's second part (meshmart.catalog.v1 → catalog). */
export function upstreamOf(binding: HttpBinding): string {
  return binding.method.parent.file.proto.package.split(".")[1] ?? "";
}

export interface EdgeOverrides {
  /** Token verifier instead of one over AUTH_JWKS_URL (tests). */
  verifier?: TokenVerifier;
  /** Where access logs go (tests capture them). */
  logDestination?: DestinationStream;
}

export interface RunningEdge {
  url: string;
  port: number;
  /** Base URL of the HTTP/2 cleartext listener, when EDGE_H2C_PORT is set. */
  h2cUrl?: string;
  close(): Promise<void>;
}

const FORWARDED = ["authorization", "traceparent", "tracestate"] as const;
/** Hop-by-hop headers (RFC 9110 §7.6.1): never forwarded by the Connect/gRPC-Web proxy. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "host",
]);

/** Headers minus hop-by-hop ones, and minus those the Connection header names. */
function endToEnd(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const named = new Set(
    String(headers.connection ?? "")
      .split(",")
      .map((h) => h.trim().toLowerCase()),
  );
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP.has(name) || named.has(name)) continue;
    out[name] = value;
  }
  return out;
}

/** The Connect protocol's name of a code: Code.ResourceExhausted → "resource_exhausted". */
export function connectCodeName(code: number): string {
  const name = (Code as unknown as Record<number, string | undefined>)[code] ?? "Unknown";
  return name.replace(/(?<!^)([A-Z])/g, "_$1").toLowerCase();
}

/**
 * Whether a request is a Connect or gRPC-Web call (as opposed to REST): Connect unary
 * (application/json or application/proto with connect-protocol-version), Connect streaming
 * (application/connect+*), or gRPC-Web (application/grpc-web, +proto, +json, -text).
 */
export function isRpcRequest(req: IncomingMessage): boolean {
  const type = (req.headers["content-type"] ?? "").split(";")[0]?.trim().toLowerCase() ?? "";
  if (type.startsWith("application/connect+") || type.startsWith("application/grpc-web")) {
    return true;
  }
  if (type === "application/json" || type === "application/proto") {
    return req.headers["connect-protocol-version"] !== undefined;
  }
  // Connect unary GET: ?connect=v1&encoding=…
  return req.method === "GET" && /[?&]connect=v1(&|$)/.test(req.url ?? "");
}
const REQUEST_ID = /^[\w.:-]{1,128}$/;

export async function startEdge(
  config: EdgeConfig,
  overrides: EdgeOverrides = {},
): Promise<RunningEdge> {
  const logger = pino(
    { level: config.logLevel, base: { service: "edge" } },
    overrides.logDestination ?? createLogDestination(),
  );
  // First: a missing build fails the start before any connection is opened.
  const site = config.staticDir === undefined ? undefined : createStaticSite(config.staticDir);
  // Details of errors (buf.validate.Violations) print as proto3-JSON Any.
  const registry: Registry = createRegistry(file_buf_validate_validate, ...publicFiles);
  const router = createHttpRouter(bindingsFromFiles(publicFiles));
  const upstreams = createUpstreams(config.upstreams);
  const verifier =
    overrides.verifier ??
    (config.jwksUrl === undefined
      ? undefined
      : createJwtVerifier({
          keys: new URL(config.jwksUrl),
          issuer: config.issuer,
          audience: config.audience,
        }));
  const limiter = createLocalLimiter(config.rateLimit);
  const redis =
    config.redisUrl === undefined || config.globalRateLimit === undefined
      ? undefined
      : createRedis({ url: config.redisUrl, logger });
  const globalLimiter: GlobalLimiter | undefined =
    redis === undefined || config.globalRateLimit === undefined
      ? undefined
      : createGlobalLimiter(redis, {
          limit: config.globalRateLimit,
          prefix: config.redisPrefix,
          logger,
        });
  /** The full names of every public RPC: "meshmart.catalog.v1.CatalogService/GetProduct". */
  const rpcPaths = new Map<string, { service: string; name: string; upstream: string }>();
  for (const file of publicFiles) {
    for (const service of file.services) {
      for (const m of service.methods) {
        rpcPaths.set(`/${service.typeName}/${m.name}`, {
          service: service.typeName,
          name: `${service.typeName}.${m.name}`,
          upstream: file.proto.package.split(".")[1] ?? "",
        });
      }
    }
  }
  const corsAll = config.corsOrigins.includes("*");
  const cors = new Set(config.corsOrigins);

  const send = (res: ServerResponse, status: number, body: unknown, headers = {}) => {
    const text = JSON.stringify(body);
    res.writeHead(status, {
      ...headers,
      "content-type": "application/json",
      "content-length": Buffer.byteLength(text),
    });
    res.end(text);
  };

  /** Sets CORS headers; true when the request was a preflight, answered here. */
  const applyCors = (req: IncomingMessage, res: ServerResponse): boolean => {
    const origin = req.headers.origin;
    if (origin === undefined || !(corsAll || cors.has(origin))) return false;
    res.setHeader("access-control-allow-origin", corsAll ? "*" : origin);
    if (!corsAll) res.setHeader("vary", "Origin");
    res.setHeader("access-control-expose-headers", "x-request-id, www-authenticate");
    if (req.method === "OPTIONS" && req.headers["access-control-request-method"] !== undefined) {
      res.writeHead(204, {
        "access-control-allow-methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
        "access-control-allow-headers":
          "authorization, content-type, x-request-id, traceparent, tracestate",
        "access-control-max-age": "600",
      });
      res.end();
      return true;
    }
    return false;
  };

  const readBody = async (req: IncomingMessage): Promise<Buffer> => {
    const declared = Number(req.headers["content-length"] ?? "0");
    const tooLarge = () =>
      new EdgeError(
        `request body exceeds ${config.maxBodyBytes} bytes`,
        Code.ResourceExhausted,
        413,
        { connection: "close" },
      );
    if (declared > config.maxBodyBytes) throw tooLarge();
    // Events, not `for await`: leaving an async iterator early destroys the socket, and
    // the 413 would never reach the client.
    return new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      const onData = (chunk: Buffer) => {
        size += chunk.length;
        if (size > config.maxBodyBytes) {
          req.off("data", onData);
          req.resume(); // Drain and discard the rest.
          reject(tooLarge());
          return;
        }
        chunks.push(chunk);
      };
      req.on("data", onData);
      req.once("end", () => resolve(Buffer.concat(chunks)));
      req.once("error", reject);
    });
  };

  /** The verified caller's id, or undefined for an anonymous call of a public method. */
  const authenticate = async (req: IncomingMessage, name: string): Promise<string | undefined> => {
    const header = req.headers.authorization;
    if (publicMethods.has(name)) {
      // A valid token on a public method still identifies the caller (for rate limits).
      const token = header === undefined ? undefined : /^Bearer\s+(\S+)$/i.exec(header)?.[1];
      if (token === undefined || verifier === undefined) return undefined;
      try {
        return (await verifier(token)).userId;
      } catch {
        return undefined;
      }
    }
    const challenge = (error?: string) => ({
      "www-authenticate":
        error === undefined
          ? 'Bearer realm="meshmart"'
          : `Bearer realm="meshmart", error="${error}"`,
    });
    if (header === undefined) {
      throw new EdgeError("Jwt is missing", Code.Unauthenticated, 401, challenge());
    }
    const token = /^Bearer\s+(\S+)$/i.exec(header)?.[1];
    if (token === undefined || verifier === undefined) {
      throw new EdgeError(
        "Jwt verification fails",
        Code.Unauthenticated,
        401,
        challenge("invalid_token"),
      );
    }
    try {
      return (await verifier(token)).userId;
    } catch {
      throw new EdgeError(
        "Jwt verification fails",
        Code.Unauthenticated,
        401,
        challenge("invalid_token"),
      );
    }
  };

  const clientIp = (req: IncomingMessage): string => {
    if (config.trustForwarded) {
      const forwarded = req.headers["x-forwarded-for"];
      const first = (Array.isArray(forwarded) ? forwarded[0] : forwarded)?.split(",")[0]?.trim();
      if (first !== undefined && first !== "") return first;
    }
    return req.socket.remoteAddress ?? "unknown";
  };

  const refuse = (verdict: Verdict & { ok: false }) =>
    new EdgeError(
      verdict.scope === "global" ? "edge rate limit exceeded" : "rate limit exceeded",
      Code.ResourceExhausted,
      429,
      { "retry-after": String(verdict.retryAfterSeconds) },
    );

  /**
   * Token check and rate limits for one call of `name`. A refused token still costs the
   * client IP a token, so bad tokens cannot be tried for free.
   */
  const admit = async (req: IncomingMessage, name: string): Promise<void> => {
    let userId: string | undefined;
    let authError: unknown;
    try {
      userId = await authenticate(req, name);
    } catch (reason) {
      authError = reason;
    }
    const client = userId === undefined ? `ip:${clientIp(req)}` : `user:${userId}`;
    const local = limiter.take(client, name);
    if (!local.ok) throw refuse(local);
    if (authError !== undefined) throw authError;
    if (globalLimiter !== undefined) {
      const global = await globalLimiter.take();
      if (!global.ok) throw refuse(global);
    }
  };

  /** Streams a Connect/gRPC-Web call to the owning service's HTTP port, both ways. */
  const proxyRpc = (
    req: IncomingMessage,
    res: ServerResponse,
    address: string,
    requestId: string,
  ): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      const colon = address.lastIndexOf(":");
      const headers = endToEnd(req.headers);
      headers["x-request-id"] = requestId;
      const upstreamReq = httpRequest({
        host: address.slice(0, colon).replace(/^\[|\]$/g, ""),
        port: Number(address.slice(colon + 1)),
        method: req.method ?? "POST",
        path: req.url ?? "/",
        headers,
        timeout: config.requestTimeoutMs,
      });
      let answered = false;
      upstreamReq.on("response", (upstreamRes) => {
        answered = true;
        // A stream (WatchOrder) may stay quiet longer than a unary call may take; its
        // deadline travels in connect-timeout-ms / grpc-timeout and the service enforces it.
        // (gRPC-Web frames unary and streaming calls alike; once headers are back, a unary
        // call has its answer anyway.)
        if (isFramedContentType(req.headers["content-type"])) upstreamReq.setTimeout(0);
        res.writeHead(upstreamRes.statusCode ?? 502, endToEnd(upstreamRes.headers));
        upstreamRes.pipe(res);
        upstreamRes.once("end", () => {
          // gRPC-Web puts trailers in the body; HTTP trailers would only be on h2.
          resolve();
        });
        upstreamRes.once("error", () => {
          res.destroy();
          resolve();
        });
      });
      upstreamReq.once("timeout", () => {
        upstreamReq.destroy(new EdgeError("upstream request timeout", Code.DeadlineExceeded));
      });
      upstreamReq.once("error", (err) => {
        if (answered) {
          res.destroy();
          resolve();
          return;
        }
        reject(
          err instanceof EdgeError
            ? err
            : new EdgeError("upstream connect error", Code.Unavailable),
        );
      });
      res.once("close", () => {
        if (!res.writableFinished) upstreamReq.destroy();
      });
      req.pipe(upstreamReq);
    });

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const started = performance.now();
    const incomingId = req.headers["x-request-id"];
    const requestId =
      typeof incomingId === "string" && REQUEST_ID.test(incomingId) ? incomingId : randomUUID();
    res.setHeader("x-request-id", requestId);
    const rawUrl = req.url ?? "/";
    const q = rawUrl.indexOf("?");
    const path = q === -1 ? rawUrl : rawUrl.slice(0, q);
    const query = q === -1 ? "" : rawUrl.slice(q + 1);
    let upstream = "";
    /** Set for Connect/gRPC-Web calls: errors are then answered in that protocol. */
    let rpcMode: "connect" | "grpc-web" | undefined;
    const abort = new AbortController();
    res.on("close", () => {
      if (!res.writableFinished) abort.abort();
    });
    try {
      if (applyCors(req, res)) return;
      if (path === "/healthz" && req.method === "GET") {
        send(res, 200, { status: "ok" });
        return;
      }
      if (path === "/openapi.json" && req.method === "GET") {
        await openApiHandler(res);
        return;
      }
      if (path === "/readyz" && req.method === "GET") {
        const checks = await upstreams.check(2_000);
        const ready = Object.values(checks).every((s) => s === "SERVING");
        send(res, ready ? 200 : 503, { status: ready ? "ready" : "not ready", upstreams: checks });
        return;
      }
      const rpc = rpcPaths.get(path);
      if (rpc !== undefined && isRpcRequest(req)) {
        rpcMode = (req.headers["content-type"] ?? "").startsWith("application/grpc-web")
          ? "grpc-web"
          : "connect";
        upstream = rpc.upstream;
        await admit(req, rpc.name);
        const address = config.httpUpstreams[rpc.upstream];
        if (address === undefined) {
          throw new EdgeError(`no upstream configured for ${upstream}`, Code.Unavailable);
        }
        await proxyRpc(req, res, address, requestId);
        return;
      }
      const found = router.route(req.method ?? "GET", path);
      if (found.kind === "not-found") {
        // Last resort, so the site can never shadow a REST route or an RPC path.
        if (site !== undefined && (await site.serve(req, res, path))) return;
        throw new EdgeError(`no route for ${req.method} ${path}`, Code.NotFound);
      }
      if (found.kind === "method-not-allowed") {
        throw new EdgeError(
          `method ${req.method} not allowed for ${path}`,
          Code.Unimplemented,
          405,
          {
            allow: found.allow.join(", "),
          },
        );
      }
      const { binding, variables } = found;
      upstream = upstreamOf(binding);
      await admit(req, rpcName(binding));
      const method = binding.method;
      if (method.methodKind !== "unary" && method.methodKind !== "server_streaming") {
        throw new EdgeError(
          "client and bidi streaming methods have no REST form",
          Code.Unimplemented,
        );
      }
      const body = await readBody(req);
      const input = buildRequest(binding, { variables, query, body }, registry);
      const client = upstreams.get(upstream);
      if (client === undefined) {
        throw new EdgeError(`no upstream configured for ${upstream}`, Code.Unavailable);
      }
      const headers = new Headers({ "x-request-id": requestId });
      for (const name of FORWARDED) {
        const value = req.headers[name];
        if (typeof value === "string") headers.set(name, value);
      }
      if (method.methodKind === "server_streaming") {
        // As Envoy's routes for streams: no overall timeout (the service caps its streams).
        await sendJsonArrayStream(
          res,
          client.serverStream(
            method as DescMethodServerStreaming,
            abort.signal,
            undefined,
            headers,
            input,
          ),
          (message) => responseJson(binding, message, registry),
        );
        return;
      }
      const result = await client.unary(
        method as DescMethodUnary,
        abort.signal,
        config.requestTimeoutMs,
        headers,
        input,
      );
      send(res, 200, responseJson(binding, result.message, registry));
    } catch (reason) {
      const mapped =
        reason instanceof BadRequestError || reason instanceof PathDecodeError
          ? new EdgeError(reason.message, Code.InvalidArgument)
          : reason;
      const answer = errorResponse(mapped, registry);
      if (answer.dropped.length > 0) {
        logger.warn({ request_id: requestId, types: answer.dropped }, "error details dropped");
      }
      if (res.headersSent || res.destroyed) return;
      const code = typeof answer.body.code === "number" ? answer.body.code : Code.Unknown;
      const message = typeof answer.body.message === "string" ? answer.body.message : "";
      if (rpcMode === "grpc-web") {
        // Trailers-only: the status rides in headers, with HTTP 200, as gRPC-Web servers do.
        res.writeHead(200, {
          ...answer.headers,
          "content-type": "application/grpc-web+proto",
          "grpc-status": String(code),
          "grpc-message": encodeURIComponent(message),
          "content-length": 0,
        });
        res.end();
      } else if (rpcMode === "connect" && isConnectStreaming(req.headers["content-type"])) {
        // Connect streaming clients read errors only from the end-of-stream message of a
        // 200 response; any other status reaches them as a bare "HTTP 401".
        const json = Buffer.from(
          JSON.stringify({ error: { code: connectCodeName(code), message } }),
        );
        const prefix = Buffer.alloc(5);
        prefix.writeUInt8(0b10, 0); // end-stream flag
        prefix.writeUInt32BE(json.length, 1);
        res.writeHead(200, {
          ...answer.headers,
          "content-type": req.headers["content-type"] ?? "application/connect+json",
          "content-length": prefix.length + json.length,
        });
        res.end(Buffer.concat([prefix, json]));
      } else if (rpcMode === "connect") {
        send(res, answer.status, { code: connectCodeName(code), message }, answer.headers);
      } else {
        send(res, answer.status, answer.body, answer.headers);
      }
    } finally {
      logger.info(
        {
          method: req.method,
          path,
          status: res.statusCode,
          duration_ms: Math.round((performance.now() - started) * 1000) / 1000,
          upstream,
          request_id: requestId,
        },
        "access",
      );
    }
  };

  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    handle(req, res).catch((reason: unknown) => {
      logger.error({ err: reason }, "unhandled edge error");
      if (!res.headersSent) res.destroy();
    });
  };
  const server = createServer(onRequest);
  // HTTP/2 cleartext on a port of its own (see EDGE_H2C_PORT); the compatibility API
  // hands the same handler request/response objects of the same shape.
  const h2Sessions = new Set<Http2Session>();
  let h2c: Http2Server | undefined;
  let h2cPort: number | undefined;
  if (config.h2cPort !== undefined) {
    const h2 = createHttp2Server({}, onRequest as never);
    h2.on("session", (session: Http2Session) => {
      h2Sessions.add(session);
      session.once("close", () => h2Sessions.delete(session));
    });
    h2.listen(config.h2cPort, config.host);
    await once(h2, "listening");
    h2cPort = (h2.address() as AddressInfo).port;
    h2c = h2;
  }
  server.listen(config.port, config.host);
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  const host = config.host.includes(":") ? `[${config.host}]` : config.host;
  logger.info(
    { port, h2c_port: h2cPort, upstreams: config.upstreams, static_dir: site?.root },
    "edge listening",
  );
  let closing: Promise<void> | undefined;
  return {
    url: `http://${host === "0.0.0.0" ? "127.0.0.1" : host}:${port}`,
    port,
    ...(h2cPort === undefined
      ? {}
      : { h2cUrl: `http://${host === "0.0.0.0" ? "127.0.0.1" : host}:${h2cPort}` }),
    close() {
      closing ??= (async () => {
        const done = Promise.all([
          new Promise<void>((resolve) => server.close(() => resolve())),
          new Promise<void>((resolve) =>
            h2c === undefined ? resolve() : h2c.close(() => resolve()),
          ),
        ]);
        server.closeIdleConnections();
        for (const session of h2Sessions) session.close();
        const reaper = setInterval(() => server.closeIdleConnections(), 50);
        const timer = setTimeout(() => {
          server.closeAllConnections();
          for (const session of h2Sessions) session.destroy();
        }, config.SHUTDOWN_GRACE_MS);
        await done;
        clearInterval(reaper);
        clearTimeout(timer);
        upstreams.close();
        limiter.close();
        redis?.disconnect();
      })();
      return closing;
    },
  };
}

/** A Connect streaming call: `application/connect+json` or `+proto`. */
function isConnectStreaming(contentType: string | undefined): boolean {
  return contentType?.startsWith("application/connect+") === true;
}

/** A call whose body is enveloped messages: Connect streaming, or any gRPC-Web call. */
function isFramedContentType(contentType: string | undefined): boolean {
  return (
    isConnectStreaming(contentType) || contentType?.startsWith("application/grpc-web") === true
  );
}
