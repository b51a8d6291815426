import { once, setMaxListeners } from "node:events";
import {
  createServer as createHttpServer,
  type Server as HttpServer,
  type RequestListener,
} from "node:http";
import type { AddressInfo } from "node:net";
import { type ConnectRouter, createConnectRouter, type Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { HealthImplementation, type ServingStatus } from "grpc-health-check";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import { createAdminServer } from "./admin-server.js";
import { addServicesToGrpcServer, type ServiceRegistration } from "./grpc-adapter.js";
import type { HealthMonitor } from "./health-monitor.js";
import { addReflection } from "./reflection.js";

/**
 * Proto3 JSON as the REST edge prints it (Envoy's transcoder runs with
 * always_print_primitive_fields): fields without presence appear even at their default
 * (`"nextPageToken": ""`, `"products": []`), so a client reads one shape whichever way it
 * came in, and the OpenAPI document can list them as required. Unknown fields in requests
 * are ignored, as connect-node does by default.
 */
const CONNECT_JSON = { alwaysEmitImplicit: true, ignoreUnknownFields: true } as const;

/** A service's handlers, registered the Connect way: `router.service(Desc, impl)`. */
export type Routes = (router: ConnectRouter) => void;

/**
 * The grpc.health.v1 service name that is SERVING for as long as the process serves at all
 * (Kubernetes liveness); "" and the service's own names follow its dependencies (readiness).
 */
export const LIVENESS_SERVICE = "liveness";

/** Everything {@link startServiceHost} wires together. */
export interface ServiceHostOptions {
  routes: Routes;
  interceptors: Interceptor[];
  health: HealthMonitor;
  registry: Registry;
  logger: Logger;
  host: string;
  /** 0 picks a free port (tests). */
  grpcPort: number;
  httpPort: number;
  adminPort: number;
  maxMessageBytes: number;
  /** Deadline for calls that bring none, and the cap on those that do. */
  maxDeadlineMs: number;
  /** How long close() lets in-flight RPCs finish before cutting them off. */
  shutdownGraceMs: number;
  /**
   * Plain HTTP on the Connect port for paths that are not RPCs (identity's
   * /.well-known/jwks.json, fetched by Envoy and Istio as a plain URL).
   */
  httpFallback?: RequestListener;
}

/** A running service: its bound ports, and a graceful close. */
export interface ServiceHost {
  grpcPort: number;
  httpPort: number;
  adminPort: number;
  /** `host:port` for grpc-js clients and grpcurl. */
  grpcTarget: string;
  /** Base URL of the Connect/gRPC-Web port. */
  httpUrl: string;
  adminUrl: string;
  /** The fully-qualified names of the services served (besides health and reflection). */
  services: string[];
  /** Health NOT_SERVING, stop accepting, let in-flight RPCs finish (up to the grace), close. */
  close(): Promise<void>;
}

/**
 * Serves one set of handlers three ways: gRPC on grpc-js (the mesh's protocol, with
 * grpc.health.v1 and reflection), Connect + gRPC-Web over HTTP/1.1 on connect-node (curl
 * and browsers), and the admin port (metrics, liveness, readiness).
 */
export async function startServiceHost(options: ServiceHostOptions): Promise<ServiceHost> {
  const registrations: ServiceRegistration[] = [];
  const shutdown = new AbortController();
  // Every in-flight call links its context to this signal; hundreds at once are normal.
  setMaxListeners(0, shutdown.signal);

  // The routes run against a real Connect router for the HTTP port; the recording
  // wrapper keeps each (descriptor, implementation) pair for the gRPC port as well.
  const router = createConnectRouter({
    interceptors: options.interceptors,
    readMaxBytes: options.maxMessageBytes,
    writeMaxBytes: options.maxMessageBytes,
    shutdownSignal: shutdown.signal,
  });
  const recording: ConnectRouter = {
    get handlers() {
      return router.handlers;
    },
    service(desc, impl, opts) {
      registrations.push({ desc, impl });
      router.service(desc, impl, opts);
      return this;
    },
    rpc() {
      throw new Error(
        "register whole services with router.service(); single rpc() is not served on gRPC",
      );
    },
  };
  options.routes(recording);

  const grpcServer = new grpc.Server({
    "grpc.max_receive_message_length": options.maxMessageBytes,
    "grpc.max_send_message_length": options.maxMessageBytes,
    // Clients reconnect periodically, so new replicas behind a plain L4 balancer get traffic.
    "grpc.max_connection_age_ms": 5 * 60_000,
    "grpc.max_connection_age_grace_ms": options.shutdownGraceMs,
    "grpc.keepalive_time_ms": 60_000,
    "grpc.keepalive_timeout_ms": 20_000,
    "grpc.max_concurrent_streams": 1000,
    // Nothing serves channelz here, and its per-call bookkeeping is ~5 % of a small RPC.
    "grpc.enable_channelz": 0,
  });
  addServicesToGrpcServer(grpcServer, registrations, {
    interceptors: options.interceptors,
    shutdownSignal: shutdown.signal,
    maxMessageBytes: options.maxMessageBytes,
    maxDeadlineMs: options.maxDeadlineMs,
  });
  const serviceNames = registrations.map((r) => r.desc.typeName);
  const healthService = new HealthImplementation();
  const applyHealth = (verdict: ServingStatus) => {
    healthService.setStatus("", verdict);
    for (const name of serviceNames) healthService.setStatus(name, verdict);
  };
  applyHealth(options.health.verdict());
  // The process answers, whatever its dependencies do: a liveness probe on this name
  // restarts a wedged process, never one that is waiting out a database outage or draining.
  healthService.setStatus(LIVENESS_SERVICE, "SERVING");
  const unsubscribe = options.health.onChange(applyHealth);
  healthService.addToServer(grpcServer);
  addReflection(
    grpcServer,
    registrations.map((r) => r.desc),
  );

  const grpcPort = await new Promise<number>((resolve, reject) => {
    grpcServer.bindAsync(
      `${options.host}:${options.grpcPort}`,
      grpc.ServerCredentials.createInsecure(),
      (err, port) => (err ? reject(err) : resolve(port)),
    );
  });

  const httpServer = createHttpServer(
    connectNodeAdapter({
      routes: options.routes,
      interceptors: options.interceptors,
      readMaxBytes: options.maxMessageBytes,
      writeMaxBytes: options.maxMessageBytes,
      shutdownSignal: shutdown.signal,
      jsonOptions: CONNECT_JSON,
      // Our HTTP port is node:http only, so requests really are IncomingMessages.
      ...(options.httpFallback === undefined ? {} : { fallback: options.httpFallback as never }),
    }),
  );
  // Slow-loris and idle-connection bounds; RPC time itself is bounded by deadlines.
  httpServer.headersTimeout = 10_000;
  httpServer.requestTimeout = 5 * 60_000;
  httpServer.keepAliveTimeout = 65_000;
  const httpPort = await listen(httpServer, options.host, options.httpPort);
  const admin = createAdminServer(options.registry, options.health);
  const adminPort = await listen(admin, options.host, options.adminPort);

  const displayHost = options.host === "0.0.0.0" ? "127.0.0.1" : options.host;
  options.logger.info(
    { grpc: grpcPort, http: httpPort, admin: adminPort, services: serviceNames },
    "listening",
  );

  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      options.health.shutdown();
      unsubscribe();
      applyHealth("NOT_SERVING");
      const grace = setTimeout(() => {
        options.logger.warn(
          { grace_ms: options.shutdownGraceMs },
          "grace period over, cutting in-flight calls",
        );
        shutdown.abort();
        grpcServer.forceShutdown();
        httpServer.closeAllConnections();
      }, options.shutdownGraceMs);
      const grpcDone = new Promise<void>((resolve) => grpcServer.tryShutdown(() => resolve()));
      const httpDone = new Promise<void>((resolve) => httpServer.close(() => resolve()));
      // close() only stops accepting; a keep-alive connection turns idle when its last
      // request ends, and must then be closed for close() to finish.
      const reaper = setInterval(() => httpServer.closeIdleConnections(), 50);
      httpServer.closeIdleConnections();
      await Promise.all([
        grpcDone.then(() => options.logger.debug("grpc drained")),
        httpDone.then(() => options.logger.debug("http drained")),
      ]);
      clearInterval(reaper);
      clearTimeout(grace);
      shutdown.abort();
      admin.closeAllConnections();
      await new Promise<void>((resolve) => admin.close(() => resolve()));
      options.logger.info("stopped serving");
    })();
    return closing;
  };

  return {
    grpcPort,
    httpPort,
    adminPort,
    grpcTarget: `${displayHost}:${grpcPort}`,
    httpUrl: `http://${displayHost}:${httpPort}`,
    adminUrl: `http://${displayHost}:${adminPort}`,
    services: serviceNames,
    close,
  };
}

async function listen(server: HttpServer, host: string, port: number): Promise<number> {
  server.listen(port, host);
  await once(server, "listening");
  return (server.address() as AddressInfo).port;
}
