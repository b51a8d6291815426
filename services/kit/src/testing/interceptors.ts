import { createRouterTransport, type Interceptor, type Transport } from "@connectrpc/connect";
import { Registry } from "prom-client";
import type { TokenVerifier } from "../interceptors/auth.js";
import { createServerInterceptors } from "../interceptors/index.js";
import { createLogger } from "../observability/logger.js";
import { createRpcMetrics } from "../observability/rpc-metrics.js";
import type { Routes } from "../server/service-host.js";
import { createLogSink, type LogSink } from "./log-sink.js";

/** What the test chain may differ in from the production one. */
export interface TestInterceptorOptions {
  verifier?: TokenVerifier;
  maxDeadlineMs?: number;
  /** Methods where a bad token means anonymous; the mesh's PUBLIC_METHODS by default. */
  publicMethods?: ReadonlySet<string>;
}

/** The production interceptor chain with captured logs and a private registry, for in-memory tests. */
export function createTestInterceptors(options: TestInterceptorOptions = {}): {
  interceptors: Interceptor[];
  logs: LogSink;
  registry: Registry;
} {
  const logs = createLogSink();
  const registry = new Registry();
  const interceptors = createServerInterceptors({
    service: "test",
    logger: createLogger({ service: "test", level: "debug", destination: logs.stream }),
    metrics: createRpcMetrics(registry),
    verifier: options.verifier,
    ...(options.publicMethods === undefined ? {} : { publicMethods: options.publicMethods }),
    maxDeadlineMs: options.maxDeadlineMs ?? 30_000,
  });
  return { interceptors, logs, registry };
}

/**
 * `routes` served in memory through {@link createTestInterceptors}' chain: what a service's
 * test fixture calls its handlers through, as a client would over the network.
 */
export function createTestTransport(
  routes: Routes,
  options: TestInterceptorOptions = {},
): { transport: Transport; logs: LogSink; registry: Registry } {
  const { interceptors, logs, registry } = createTestInterceptors(options);
  return { transport: createRouterTransport(routes, { router: { interceptors } }), logs, registry };
}
