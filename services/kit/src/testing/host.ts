import type { Registry } from "prom-client";
import { kitConfigSchema, loadConfig } from "../config.js";
import type { TokenVerifier } from "../interceptors/auth.js";
import { createRuntime, serve } from "../runtime.js";
import type { DependencyCheck } from "../server/health-monitor.js";
import type { Routes, ServiceHost } from "../server/service-host.js";
import { createLogSink, type LogSink } from "./log-sink.js";

/** Options for {@link startTestHost}. */
export interface TestHostOptions {
  routes: Routes;
  checks?: DependencyCheck[];
  verifier?: TokenVerifier;
  env?: Record<string, string>;
}

/** A served test host with its captured logs and metrics registry. */
export interface TestHost extends ServiceHost {
  logs: LogSink;
  registry: Registry;
}

/**
 * Serves `routes` exactly as production does (runtime, interceptors, health, three
 * listeners) on free loopback ports, logging into memory.
 */
export async function startTestHost(options: TestHostOptions): Promise<TestHost> {
  const config = loadConfig(kitConfigSchema, {
    SERVICE_NAME: "kit-test",
    GRPC_PORT: "0",
    HTTP_PORT: "0",
    ADMIN_PORT: "0",
    LOG_LEVEL: "debug",
    HEALTH_INTERVAL_MS: "200",
    ...options.env,
  });
  const logs = createLogSink();
  const runtime = await createRuntime(config, {
    logDestination: logs.stream,
    ...(options.verifier ? { verifier: options.verifier } : {}),
  });
  const host = await serve(runtime, { routes: options.routes, checks: options.checks ?? [] });
  return { ...host, logs, registry: runtime.registry };
}
