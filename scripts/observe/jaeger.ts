/**
 * Jaeger v2 on this machine (`make up OBSERVE=1`, tests/observe): the single `jaeger` binary
 * that `make tools` builds, with a config file of ours — OTLP in (gRPC for Envoy, HTTP for
 * the services), in-memory storage, the query API on its own port. Nothing is persisted: a
 * restart starts with no traces.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type ManagedChild, readyOrStopped, spawnManaged } from "@meshmart/kit/testing";
import { stringify } from "yaml";

/** The ports Jaeger listens on, all on 127.0.0.1. */
export interface JaegerPorts {
  /** OTLP/gRPC receiver (Envoy's OpenTelemetry tracer speaks gRPC). */
  otlpGrpc: number;
  /** OTLP/HTTP receiver (the services' exporter: `<url>/v1/traces`). */
  otlpHttp: number;
  /** Query API (`/api/traces/<id>`, `/api/v3/…`) and the UI. */
  query: number;
  /** Query API over gRPC: unused here, but Jaeger opens it, so it gets a port of ours. */
  queryGrpc: number;
}

/** Options for {@link jaegerConfig}. */
export interface JaegerConfigOptions {
  ports: JaegerPorts;
  /** Traces kept in memory before the oldest go (default 50,000: a local session's worth). */
  maxTraces?: number;
  /** Directory of a built Jaeger UI to serve instead of the binary's own assets. */
  uiAssets?: string;
}

/**
 * Jaeger's configuration (OpenTelemetry-collector layout: receivers, processors, exporters,
 * extensions). Only what this mesh uses is enabled: no Jaeger/Zipkin receivers, no sampling
 * endpoint, and its own metrics off, since its default Prometheus port (8888) is anyone's.
 */
export function jaegerConfig(options: JaegerConfigOptions): Record<string, unknown> {
  const at = (port: number) => `127.0.0.1:${port}`;
  const { ports } = options;
  return {
    service: {
      extensions: ["jaeger_storage", "jaeger_query"],
      pipelines: {
        traces: {
          receivers: ["otlp"],
          processors: ["batch"],
          exporters: ["jaeger_storage_exporter"],
        },
      },
      telemetry: {
        resource: { "service.name": "jaeger" },
        metrics: { level: "none" },
        logs: { level: "warn", encoding: "json" },
      },
    },
    extensions: {
      jaeger_storage: {
        backends: { memory: { memory: { max_traces: options.maxTraces ?? 50_000 } } },
      },
      jaeger_query: {
        storage: { traces: "memory" },
        // On by default in v2: the query service would trace itself to localhost:4317.
        enable_tracing: false,
        http: { endpoint: at(ports.query) },
        grpc: { endpoint: at(ports.queryGrpc) },
        ...(options.uiAssets === undefined ? {} : { ui: { assets_path: options.uiAssets } }),
      },
    },
    receivers: {
      otlp: {
        protocols: {
          grpc: { endpoint: at(ports.otlpGrpc) },
          http: { endpoint: at(ports.otlpHttp) },
        },
      },
    },
    // A short batch timeout: a span is queryable within a fraction of a second of arriving,
    // which is what someone who just placed an order (or a test) wants.
    processors: { batch: { timeout: "200ms" } },
    exporters: { jaeger_storage_exporter: { trace_storage: "memory" } },
  };
}

/** Options for {@link startJaeger}. */
export interface StartJaegerOptions extends JaegerConfigOptions {
  /** The `jaeger` binary (toolPath("jaeger")). */
  bin: string;
  /** Where its config file goes (created if missing). */
  dir: string;
  /** Each output line (warnings and errors only; Jaeger logs JSON). */
  onLine?: (line: string) => void;
  readyTimeoutMs?: number;
}

/** A running Jaeger. */
export interface RunningJaeger {
  readonly child: ManagedChild;
  readonly ports: JaegerPorts;
  /** The UI and query API, http://127.0.0.1:port. */
  readonly url: string;
  /** Base URL for OTLP/HTTP exporters (OTEL_EXPORTER_OTLP_ENDPOINT; the SDK adds /v1/traces). */
  readonly otlpHttpUrl: string;
  stop(): Promise<void>;
}

/** The config file name; reaping an orphan recognises Jaeger by it on the command line. */
export const JAEGER_CONFIG_FILE = "jaeger.yaml";

/**
 * Starts Jaeger and waits until both ends answer: the query API, and the OTLP/HTTP receiver
 * (which the collector starts after its extensions) accepting an empty export.
 */
export async function startJaeger(options: StartJaegerOptions): Promise<RunningJaeger> {
  mkdirSync(options.dir, { recursive: true });
  const configFile = join(options.dir, JAEGER_CONFIG_FILE);
  writeFileSync(configFile, stringify(jaegerConfig(options)));
  const child = spawnManaged({
    name: "jaeger",
    command: options.bin,
    args: ["--config", configFile],
    cwd: options.dir,
    env: { PATH: process.env.PATH ?? "" },
    stopSignal: "SIGTERM",
    stopTimeoutMs: 5_000,
    ...(options.onLine === undefined ? {} : { onLine: options.onLine }),
  });
  const { ports } = options;
  const url = `http://127.0.0.1:${ports.query}`;
  await readyOrStopped(
    child,
    async () => {
      const otlp = await fetch(`http://127.0.0.1:${ports.otlpHttp}/v1/traces`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: "{}",
        signal: AbortSignal.timeout(1_000),
      });
      await otlp.body?.cancel();
      if (otlp.status !== 200) return false;
      const services = await fetch(`${url}/api/services`, { signal: AbortSignal.timeout(1_000) });
      await services.body?.cancel();
      return services.status === 200;
    },
    options.readyTimeoutMs ?? 30_000,
  );
  return {
    child,
    ports,
    url,
    otlpHttpUrl: `http://127.0.0.1:${ports.otlpHttp}`,
    stop: () => child.stop(),
  };
}
