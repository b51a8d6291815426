import type { Interceptor } from "@connectrpc/connect";
import { Registry } from "prom-client";
import type { TokenVerifier } from "../interceptors/auth.js";
import { createServerInterceptors } from "../interceptors/index.js";
import { createLogger } from "../observability/logger.js";
import { createRpcMetrics } from "../observability/rpc-metrics.js";
import { createLogSink, type LogSink } from "./log-sink.js";

/** The production interceptor chain with captured logs and a private registry, for in-memory tests. */
export function createTestInterceptors(
  options: { verifier?: TokenVerifier; maxDeadlineMs?: number } = {},
): {
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
    maxDeadlineMs: options.maxDeadlineMs ?? 30_000,
  });
  return { interceptors, logs, registry };
}
