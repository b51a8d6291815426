/**
 * One pair of real sidecars per variant: orders' (the client) and catalog's (the server),
 * planned by the local mesh's own planner (scripts/mesh/local-mesh.ts: ports, a local CA,
 * the generated configs) with catalog's app ports pointing at the one benchmark catalog,
 * rewritten for the variant, validated by Envoy and started with `--concurrency 1`, each
 * pinned to its core from its first instruction.
 */
import { readFileSync } from "node:fs";
import { chmod, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { freePort } from "@meshmart/kit/testing";
import { validateWithEnvoy } from "../../edge/envoy/local.js";
import {
  type AppPorts,
  type MeshInstance,
  planLocalMesh,
  startSidecar,
} from "../../scripts/mesh/local-mesh.js";
import { type Bootstrap, countAccessLogs, type Variant } from "./variants.js";

/** A running sidecar and where its files are. */
export interface BenchSidecar {
  instance: MeshInstance;
  pid: number;
  adminUrl: string;
  /** The config it runs: the generated file, or the variant's rewritten copy of it. */
  configFile: string;
  /** Its stdout (the access log when on): a file, or /dev/null. */
  stdoutPath: string;
  close(): Promise<void>;
}

/** A variant's client and server sidecars. */
export interface SidecarPair {
  variant: Variant;
  client: BenchSidecar;
  server: BenchSidecar;
  /** orders' plaintext listener for catalog's gRPC port: what orders dials, and h2load. */
  outboundGrpc: number;
  /** What the variant's rewrite changed (empty for the generated configs). */
  changes: string[];
}

/**
 * Plans catalog + orders in `dir` (orders' app is not run: the load generator stands in
 * for it on its sidecar's outbound listener), rewrites both configs for `variant`,
 * validates them and starts both sidecars. The client sidecar goes on `clientCpu` (the
 * caller's pod: with the load generator), the server sidecar on `serverCpu` (catalog's pod).
 */
export async function startSidecarPair(options: {
  envoyBin: string;
  dir: string;
  variant: Variant;
  catalog: AppPorts;
  clientCpu: string;
  serverCpu: string;
  onStderrLine: (name: string, line: string) => void;
}): Promise<SidecarPair> {
  const { variant } = options;
  const mesh = await planLocalMesh({
    services: ["catalog", "orders"],
    edge: false,
    dir: options.dir,
    freePort,
    appPorts: async (service) =>
      service === "catalog"
        ? options.catalog
        : { grpc: await freePort(), http: await freePort(), admin: await freePort() },
    accessLog: variant.accessLog,
  });
  const [orders] = mesh.instancesOf("orders");
  const [catalog] = mesh.instancesOf("catalog");
  const outboundGrpc = orders?.outbound.get("catalog")?.grpc;
  if (orders === undefined || catalog === undefined || outboundGrpc === undefined) {
    throw new Error("the planned mesh has no orders → catalog outbound listener");
  }
  const read = (file: string) => JSON.parse(readFileSync(file, "utf8")) as Bootstrap;
  const clientConfig = read(orders.configFile);
  const serverConfig = read(catalog.configFile);
  if (!variant.accessLog && countAccessLogs(clientConfig) + countAccessLogs(serverConfig) > 0) {
    throw new Error("the generated configs log every request although accessLog is false");
  }
  const changes = variant.rewrite(clientConfig, serverConfig);
  const configFor = async (instance: MeshInstance, config: Bootstrap) => {
    if (changes.length === 0) return instance.configFile;
    const file = instance.configFile.replace(/\.json$/, `.${variant.id}.json`);
    await writeFile(file, JSON.stringify(config, null, 2));
    return file;
  };
  const start = async (
    instance: MeshInstance,
    config: Bootstrap,
    cpu: string,
  ): Promise<BenchSidecar> => {
    const configFile = await configFor(instance, config);
    validateWithEnvoy(options.envoyBin, configFile);
    const stdoutPath = variant.accessLog
      ? join(options.dir, `${instance.instance}.access.log`)
      : "/dev/null";
    const wrapper = await pinnedEnvoy(
      join(options.dir, `${instance.instance}-envoy.sh`),
      options.envoyBin,
      cpu,
      stdoutPath,
    );
    const name = `${variant.id}/${instance.workload}-sidecar`;
    const running = await startSidecar(
      wrapper,
      { ...instance, configFile },
      { concurrency: 1, onLine: (line) => options.onStderrLine(name, line) },
    );
    return {
      instance,
      pid: running.envoy.child.pid,
      adminUrl: running.envoy.adminUrl,
      configFile,
      stdoutPath,
      close: () => running.envoy.close(),
    };
  };
  const server = await start(catalog, serverConfig, options.serverCpu);
  try {
    const client = await start(orders, clientConfig, options.clientCpu);
    return { variant, client, server, outboundGrpc, changes };
  } catch (reason) {
    await server.close();
    throw reason;
  }
}

/**
 * Writes `exec taskset -c <cpu> envoy "$@" > <stdout>` to `file`, for startSidecar to run
 * as its "binary" (the same shape as bench/edge/envoy.ts's wrapper): exec keeps one pid, so
 * the pid is Envoy's; every thread it starts inherits the pinning; and the access log is
 * written by Envoy's own flush thread straight into the file instead of through this
 * runner, which shares the load generator's core.
 */
async function pinnedEnvoy(
  file: string,
  envoyBin: string,
  cpu: string,
  stdoutPath: string,
): Promise<string> {
  const q = (value: string) => `'${value.replaceAll("'", `'\\''`)}'`;
  await writeFile(
    file,
    `#!/bin/sh\nexec taskset -c ${q(cpu)} ${q(envoyBin)} "$@" >${q(stdoutPath)}\n`,
  );
  await chmod(file, 0o755);
  return file;
}
