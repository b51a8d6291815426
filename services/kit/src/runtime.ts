import { randomBytes } from "node:crypto";
import type { RequestListener } from "node:http";
import type { DestinationStream } from "pino";
import { collectDefaultMetrics, Registry } from "prom-client";
import type { KitConfig } from "./config.js";
import {
  createJwtVerifier,
  createServerInterceptors,
  type TokenVerifier,
} from "./interceptors/index.js";
import { createLogDestination, createLogger, type Logger } from "./observability/logger.js";
import { createRpcMetrics, type RpcMetrics } from "./observability/rpc-metrics.js";
import { setupTracing } from "./observability/tracing.js";
import { createHealthMonitor, type DependencyCheck } from "./server/health-monitor.js";
import { type Routes, type ServiceHost, startServiceHost } from "./server/service-host.js";

/** Process-level pieces a service builds its dependencies from. */
export interface Runtime {
  config: KitConfig;
  logger: Logger;
  /** Same destination as `logger`, without redaction: the access log's fixed fields are never secret. */
  accessLogger: Logger;
  registry: Registry;
  metrics: RpcMetrics;
  verifier: TokenVerifier | undefined;
  /**
   * Aborted when the service starts shutting down, before in-flight RPCs drain: a
   * long-lived stream (WatchOrder) ends on it instead of holding the drain to its deadline.
   */
  shuttingDown: AbortSignal;
  /** Aborts {@link shuttingDown}; `serve`'s close() calls it first. */
  beginShutdown(): void;
  /**
   * The key page tokens are signed with: PAGE_TOKEN_KEY, or (unset) one made for this
   * process on first use, with a warning, since its tokens then die with the process and
   * mean nothing to another replica. Only services with list methods ask for it.
   */
  pageTokenKey(): Buffer;
}

/** Overrides for tests: capture logs, verify tokens with a local key set. */
export interface RuntimeOverrides {
  logDestination?: DestinationStream;
  verifier?: TokenVerifier;
}

/**
 * Logger, metrics registry (with process metrics), tracing and the token verifier, from
 * the validated config.
 */
export async function createRuntime(
  config: KitConfig,
  overrides: RuntimeOverrides = {},
): Promise<Runtime> {
  const destination = overrides.logDestination ?? createLogDestination();
  const logger = createLogger({
    service: config.SERVICE_NAME,
    level: config.LOG_LEVEL,
    destination,
  });
  const accessLogger = createLogger({
    service: config.SERVICE_NAME,
    level: config.LOG_LEVEL,
    destination,
    redact: false,
  });
  const registry = new Registry();
  registry.setDefaultLabels({ service: config.SERVICE_NAME });
  collectDefaultMetrics({ register: registry });
  await setupTracing({
    service: config.SERVICE_NAME,
    otlpTracesUrl:
      config.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ??
      (config.OTEL_EXPORTER_OTLP_ENDPOINT
        ? new URL("v1/traces", `${config.OTEL_EXPORTER_OTLP_ENDPOINT.replace(/\/?$/, "/")}`).href
        : undefined),
  });
  const verifier =
    overrides.verifier ??
    (config.AUTH_JWKS_URL === undefined
      ? undefined
      : createJwtVerifier({
          keys: new URL(config.AUTH_JWKS_URL),
          issuer: config.AUTH_ISSUER,
          audience: config.AUTH_AUDIENCE,
        }));
  const shutdown = new AbortController();
  let pageTokenKey = config.PAGE_TOKEN_KEY;
  return {
    config,
    logger,
    accessLogger,
    registry,
    metrics: createRpcMetrics(registry),
    verifier,
    shuttingDown: shutdown.signal,
    beginShutdown: () => shutdown.abort(),
    pageTokenKey() {
      if (pageTokenKey === undefined) {
        pageTokenKey = randomBytes(32);
        logger.warn(
          "PAGE_TOKEN_KEY is not set: page tokens are signed with a key made for this process; they stop working when it restarts and on other replicas",
        );
      }
      return pageTokenKey;
    },
  };
}

/** What {@link serve} needs beyond the runtime. */
export interface ServeOptions {
  routes: Routes;
  checks: DependencyCheck[];
  /** Called after the listeners closed: release pools and clients here. */
  onClose?: () => Promise<void>;
  /** Plain HTTP handler for non-RPC paths on the Connect port (see ServiceHostOptions). */
  httpFallback?: RequestListener;
}

/**
 * Starts health probing, then the three listeners with the production interceptor chain.
 * Resolves once the first health round finished, so a caller sees a settled status.
 */
export async function serve(runtime: Runtime, options: ServeOptions): Promise<ServiceHost> {
  const { config, logger, accessLogger } = runtime;
  const health = createHealthMonitor({
    checks: options.checks,
    intervalMs: config.HEALTH_INTERVAL_MS,
    logger,
  });
  await health.start();
  const host = await startServiceHost({
    routes: options.routes,
    interceptors: createServerInterceptors({
      service: config.SERVICE_NAME,
      logger,
      accessLogger: runtime.accessLogger,
      accessLog: config.ACCESS_LOG,
      slowRpcMs: config.ACCESS_LOG_SLOW_MS,
      metrics: runtime.metrics,
      verifier: runtime.verifier,
      maxDeadlineMs: config.MAX_DEADLINE_MS,
    }),
    health,
    registry: runtime.registry,
    logger,
    host: config.BIND_HOST,
    grpcPort: config.GRPC_PORT,
    httpPort: config.HTTP_PORT,
    adminPort: config.ADMIN_PORT,
    maxMessageBytes: config.MAX_MESSAGE_BYTES,
    maxDeadlineMs: config.MAX_DEADLINE_MS,
    shutdownGraceMs: config.SHUTDOWN_GRACE_MS,
    ...(options.httpFallback === undefined ? {} : { httpFallback: options.httpFallback }),
  });
  return {
    ...host,
    close: async () => {
      runtime.beginShutdown();
      await host.close();
      await options.onClose?.();
      logger.flush();
      accessLogger.flush();
    },
  };
}
