/**
 * Real Envoy as the edge in tests: the local variant of the generated config (same
 * generator as edge/envoy/envoy.yaml, loopback upstreams), in a temporary directory, on
 * free ports. Every edge test goes through this.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "@meshmart/kit/testing";
import {
  type LocalEdge,
  startEnvoy,
  validateWithEnvoy,
  writeLocalEnvoyConfig,
} from "../../edge/envoy/local.js";
import { toolPath } from "../../scripts/lib/tools.js";

/** Options for {@link startTestEdge}. */
export interface TestEdgeOptions {
  /** Ports of the services behind the edge, by name (identity, catalog, orders, …). */
  services: ReadonlyMap<string, { grpc: number; http: number }>;
  storefrontPort?: number;
  /** Ports chosen by the caller (a restarted edge keeps its URL). */
  port?: number;
  adminPort?: number;
  /** Trace every request to an OTLP/gRPC collector on this loopback port (Jaeger). */
  otlpGrpcPort?: number;
}

/** A running test edge; its access log lines are kept. */
export interface TestEdge extends LocalEdge {
  /** The access log so far, one parsed JSON object per request. */
  accessLog(): Record<string, string>[];
}

/** Starts Envoy in front of `options.services`; close() stops it and removes its files. */
export async function startTestEdge(options: TestEdgeOptions): Promise<TestEdge> {
  const dir = mkdtempSync(join(tmpdir(), "meshmart-edge-"));
  const port = options.port ?? (await freePort());
  const adminPort = options.adminPort ?? (await freePort());
  const configFile = writeLocalEnvoyConfig(join(dir, "envoy.yaml"), {
    port,
    adminPort,
    services: options.services,
    ...(options.storefrontPort === undefined ? {} : { storefrontPort: options.storefrontPort }),
    ...(options.otlpGrpcPort === undefined ? {} : { otlpGrpcPort: options.otlpGrpcPort }),
  });
  const log: Record<string, string>[] = [];
  const envoyBin = toolPath("envoy");
  try {
    validateWithEnvoy(envoyBin, configFile);
    const edge = await startEnvoy({
      envoyBin,
      configFile,
      port,
      adminPort,
      onLine: (line) => {
        if (!line.startsWith("{")) return;
        try {
          log.push(JSON.parse(line) as Record<string, string>);
        } catch {}
      },
    });
    return {
      ...edge,
      accessLog: () => [...log],
      async close() {
        await edge.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (reason) {
    rmSync(dir, { recursive: true, force: true });
    throw reason;
  }
}
