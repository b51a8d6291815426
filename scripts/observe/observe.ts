/**
 * `make up OBSERVE=1`: Jaeger (OTLP in, UI out) and Prometheus (every service and Envoy
 * scraped, the project's alert rules loaded) beside the local mesh. scripts/up.ts calls
 * {@link startObservability} before the services start (they need the OTLP endpoint), then
 * {@link Observability.scrape} once their ports are known, and stop() when it stops.
 *
 * Ports, each overridable: Jaeger UI and query API 26686 (JAEGER_UI_PORT), OTLP/gRPC 14317
 * (JAEGER_OTLP_GRPC_PORT), OTLP/HTTP 14318 (JAEGER_OTLP_HTTP_PORT), query gRPC 26685
 * (JAEGER_QUERY_GRPC_PORT), Prometheus 19090 (PROMETHEUS_PORT) — away from the standard
 * 16686/4317/4318/9090, like `make up`'s Postgres, Redis and NATS, so a Jaeger or
 * Prometheus already running on the machine is left alone.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { reapOrphan } from "@meshmart/kit/testing";
import { loadCallGraph } from "../deploy/callgraph.js";
import { chosenPort } from "../lib/ports.js";
import { toolPath } from "../lib/tools.js";
import { JAEGER_CONFIG_FILE, type RunningJaeger, startJaeger } from "./jaeger.js";
import {
  PROMETHEUS_CONFIG_FILE,
  prometheusPath,
  type RunningPrometheus,
  startPrometheus,
} from "./prometheus.js";
import { type EnvoyAdminTarget, prometheusYaml } from "./prometheus-config.js";

/** Whether the environment asks for observability (`make up OBSERVE=1`). */
export function observeRequested(env: NodeJS.ProcessEnv = process.env): boolean {
  return ["1", "true", "yes"].includes((env.OBSERVE ?? "").toLowerCase());
}

/** The default ports (see the module comment), by the variable that overrides each. */
export const OBSERVE_PORTS = {
  JAEGER_UI_PORT: 26686,
  JAEGER_QUERY_GRPC_PORT: 26685,
  JAEGER_OTLP_GRPC_PORT: 14317,
  JAEGER_OTLP_HTTP_PORT: 14318,
  PROMETHEUS_PORT: 19090,
} as const;

/** What Prometheus scrapes, known once the mesh is up. */
export interface ScrapeTargets {
  /** Admin port of each running service, by name. */
  adminPorts: ReadonlyMap<string, number>;
  edgeAdminPort?: number | undefined;
  /** More Envoys (the sidecar mesh's sidecars). */
  envoys?: readonly EnvoyAdminTarget[];
}

/** Jaeger running, Prometheus to come. */
export interface Observability {
  /** Settings for every service: where to export spans. */
  readonly serviceEnv: Readonly<Record<string, string>>;
  /** Where the edge's Envoy sends its spans (OTLP/gRPC), for writeLocalEnvoyConfig. */
  readonly otlpGrpcPort: number;
  readonly jaegerUrl: string;
  /** Starts Prometheus on the mesh's targets. */
  scrape(targets: ScrapeTargets): Promise<void>;
  /** For `make up`'s summary line. */
  summary(): string[];
  /** Stops Prometheus and Jaeger (whatever started). */
  stop(): Promise<void>;
}

/** Options for {@link startObservability}. */
export interface ObservabilityOptions {
  /** .data/up/observe: config files, Prometheus' TSDB, pid files. */
  dataDir: string;
  log: (line: string) => void;
  env?: NodeJS.ProcessEnv;
}

/**
 * Starts Jaeger (after stopping one an earlier, killed run left behind) and returns what the
 * services and the edge need to send it spans. Throws, saying which, when a port is taken
 * or a tool is missing.
 */
export async function startObservability(options: ObservabilityOptions): Promise<Observability> {
  const { dataDir, log } = options;
  const env = options.env ?? process.env;
  const jaegerDir = join(dataDir, "jaeger");
  const prometheusDir = join(dataDir, "prometheus");
  const jaegerPid = join(dataDir, "jaeger.pid");
  const prometheusPid = join(dataDir, "prometheus.pid");
  // Both before any port check: an orphan holds the ports we are about to want.
  await reapOrphan(jaegerPid, "jaeger", join(jaegerDir, JAEGER_CONFIG_FILE), log);
  await reapOrphan(prometheusPid, "prometheus", join(prometheusDir, PROMETHEUS_CONFIG_FILE), log);

  const port = (variable: keyof typeof OBSERVE_PORTS) =>
    chosenPort(env, variable, OBSERVE_PORTS[variable]);
  const jaegerPorts = {
    query: await port("JAEGER_UI_PORT"),
    queryGrpc: await port("JAEGER_QUERY_GRPC_PORT"),
    otlpGrpc: await port("JAEGER_OTLP_GRPC_PORT"),
    otlpHttp: await port("JAEGER_OTLP_HTTP_PORT"),
  };
  const prometheusPort = await port("PROMETHEUS_PORT");
  const prometheusBin = prometheusPath();

  log(
    `jaeger: starting on http://127.0.0.1:${jaegerPorts.query} (OTLP/HTTP :${jaegerPorts.otlpHttp}, OTLP/gRPC :${jaegerPorts.otlpGrpc})…`,
  );
  const jaeger: RunningJaeger = await startJaeger({
    bin: toolPath("jaeger"),
    dir: jaegerDir,
    ports: jaegerPorts,
    ...(env.JAEGER_UI_ASSETS ? { uiAssets: env.JAEGER_UI_ASSETS } : {}),
    onLine: (line) => {
      const shown = jaegerLine(line);
      if (shown !== undefined) log(`jaeger: ${shown}`);
    },
  });
  writeFileSync(jaegerPid, String(jaeger.child.pid));
  let prometheus: RunningPrometheus | undefined;

  return {
    serviceEnv: {
      OTEL_EXPORTER_OTLP_ENDPOINT: jaeger.otlpHttpUrl,
    },
    otlpGrpcPort: jaegerPorts.otlpGrpc,
    jaegerUrl: jaeger.url,
    async scrape(targets) {
      const config = prometheusYaml({
        graph: loadCallGraph(),
        adminPort: (name) => targets.adminPorts.get(name),
        edgeAdminPort: targets.edgeAdminPort,
        ...(targets.envoys === undefined ? {} : { envoys: targets.envoys }),
      });
      log(`prometheus: starting on http://127.0.0.1:${prometheusPort}…`);
      prometheus = await startPrometheus({
        bin: prometheusBin,
        dir: prometheusDir,
        port: prometheusPort,
        config,
        onLine: (line) => log(`prometheus: ${line}`),
      });
      writeFileSync(prometheusPid, String(prometheus.child.pid));
    },
    summary() {
      return [
        `Jaeger ${jaeger.url}`,
        ...(prometheus === undefined ? [] : [`Prometheus ${prometheus.url}`]),
      ];
    },
    async stop() {
      await Promise.all([prometheus?.stop(), jaeger.stop()]);
    },
  };
}

/**
 * One of Jaeger's output lines as worth showing, or undefined: its JSON log lines (warnings
 * and up, as configured) shortened to level and message, without the start-up banner and
 * with the missing UI said once in our words.
 */
function jaegerLine(line: string): string | undefined {
  if (!line.startsWith("{")) return undefined;
  try {
    const record = JSON.parse(line) as { level?: string; msg?: string; error?: string };
    if (record.msg?.startsWith("ui assets not embedded") === true) {
      return "this build has no UI assets: its pages are a placeholder, the API (/api/traces/<id>) is complete";
    }
    return `${record.level ?? "?"} ${record.msg ?? line}${record.error === undefined ? "" : `: ${record.error}`}`;
  } catch {
    return line;
  }
}
