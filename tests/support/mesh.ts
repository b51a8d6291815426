import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  createDatabase,
  databaseUrl,
  dropDatabase,
  freePort,
  httpOk,
  type ManagedChild,
  openTestEvents,
  spawnManaged,
  testNatsUrl,
  testPostgresUrl,
  testRedisUrl,
  uniqueName,
} from "@meshmart/kit/testing";
import {
  dependenciesOf,
  entryPoint,
  meshSettings,
  PUBLIC_SERVICES,
  SERVICES,
  type ServicePorts,
  serviceEnv,
} from "../../scripts/lib/services.js";
import { toolPath } from "../../scripts/lib/tools.js";
import {
  type LocalMesh,
  type MeshInstance,
  planLocalMesh,
  processName,
  type RunningSidecar,
  startSidecar,
} from "../../scripts/mesh/local-mesh.js";
import { type StaticServer, startStaticServer } from "../../web/server/static-server.js";
import { startTestEdge, type TestEdge } from "./envoy-edge.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const READY_TIMEOUT_MS = 60_000;

/** Where the mesh keeps its data; defaults to the test run's Postgres, Redis and NATS. */
export interface MeshInfra {
  postgresUrl: string;
  redisUrl: string;
  natsUrl: string;
}

/** Options for {@link startMesh}. */
export interface MeshOptions {
  label: string;
  /** Services to run (default: all six), started callees first. */
  services?: readonly string[];
  /** Also run the edge (real Envoy) in front of them. */
  edge?: boolean;
  /** The storefront's build, served behind the edge at `/`. */
  storefrontDir?: string;
  infra?: MeshInfra;
  /** Settings for every service (and the edge). */
  env?: Record<string, string>;
  /** Settings for one service, by name. */
  serviceEnv?: Record<string, Record<string, string>>;
  /**
   * Export spans: the services to OTLP/HTTP at `httpUrl` (OTEL_EXPORTER_OTLP_ENDPOINT), the
   * edge (with `edge`) over OTLP/gRPC to `grpcPort` on loopback.
   */
  otlp?: { httpUrl: string; grpcPort: number };
  /**
   * Run each process from its tsc output (`make build`) with NODE_ENV=production, as the
   * images do, instead of its source under tsx. Benchmarks want this; tests need no build.
   */
  compiled?: boolean;
  /**
   * Put every service (and the edge) behind an Envoy sidecar generated from istio/ (mTLS,
   * RBAC, retries, timeouts, outlier detection), as `make up MESH=1` does. Default: the
   * MESH environment variable ("1").
   */
  sidecars?: boolean;
  /** Instances per service (sidecar mesh only); the second is the process `<name>-1`. */
  replicas?: Record<string, number>;
  /** Sidecar access logs (one JSON line per request, kept in each sidecar's output). */
  sidecarAccessLog?: boolean;
}

/** The sidecars of a mesh started with `sidecars`. */
export interface Sidecars {
  readonly layout: LocalMesh;
  /** The instance behind a process name (`catalog`, `catalog-1`). */
  instance(process: string): MeshInstance;
  /** The running sidecar of a process. */
  sidecar(process: string): RunningSidecar;
  /** SIGKILL of the sidecar alone. */
  kill(process: string): Promise<void>;
  /** Starts a killed sidecar again with the same config. */
  start(process: string): Promise<void>;
}

/** The mesh as separate processes (what `make up` runs), each with its own database. */
export interface Mesh {
  readonly namespace: string;
  readonly infra: MeshInfra;
  ports(name: string): ServicePorts;
  /** The edge's REST base URL, http://127.0.0.1:port. */
  readonly edgeUrl: string;
  /** The edge's Envoy (admin, stats, access log), when the mesh has one. */
  readonly edge: TestEdge | undefined;
  databaseUrl(name: string): string;
  /** The sidecar mesh, when started with `sidecars`. */
  readonly sidecars: Sidecars | undefined;
  /** The processes of a service: `name`, then `name-1`, … for replicas. */
  processes(name: string): string[];
  /** SIGKILL: the process dies mid-whatever, as in a node failure. */
  kill(name: string): Promise<void>;
  /** Starts a stopped or killed service again on the same ports and database. */
  start(name: string): Promise<void>;
  isRunning(name: string): boolean;
  /** The service's last output lines. */
  output(name: string): string;
  /** Stops every process, drops the databases. */
  stop(): Promise<void>;
}

/**
 * Starts the services as `make up` would (same entry points, same settings), on ports
 * chosen up front so a restarted service comes back where its callers look for it.
 */
export async function startMesh(options: MeshOptions): Promise<Mesh> {
  const infra = options.infra ?? {
    postgresUrl: await testPostgresUrl(),
    redisUrl: await testRedisUrl(),
    natsUrl: await testNatsUrl(),
  };
  const names = options.services ?? SERVICES.map((s) => s.name);
  const specs = SERVICES.filter((s) => names.includes(s.name));
  const namespace = uniqueName(options.label).slice(0, 32).replace(/_+$/, "");
  const secrets = {
    "identity-kek": randomBytes(32).toString("base64"),
    "orders-saga-card-key": randomBytes(32).toString("base64"),
    "page-token-key": randomBytes(32).toString("base64"),
  };
  const sidecarMode = options.sidecars ?? process.env.MESH === "1";
  const replicasOf = (name: string) => (sidecarMode ? (options.replicas?.[name] ?? 1) : 1);
  const processesOf = (name: string) =>
    Array.from({ length: replicasOf(name) }, (_, i) => processName(name, i));
  const meshDir = sidecarMode ? mkdtempSync(join(tmpdir(), "meshmart-mesh-")) : undefined;
  const layout =
    meshDir === undefined
      ? undefined
      : await planLocalMesh({
          services: specs.map((s) => s.name),
          replicas: replicasOf,
          edge: options.edge === true,
          dir: meshDir,
          freePort,
          ...(options.sidecarAccessLog === undefined
            ? {}
            : { accessLog: options.sidecarAccessLog }),
        });
  const instanceOf = (process: string): MeshInstance => {
    const found = layout?.instances.find((i) => i.process === process);
    if (found === undefined) throw new Error(`${process} has no sidecar in this mesh`);
    return found;
  };
  // Per process (service or replica): the app's own ports.
  const ports = new Map<string, ServicePorts>();
  for (const spec of specs) {
    for (const name of processesOf(spec.name)) {
      const app = layout === undefined ? undefined : instanceOf(name).app;
      ports.set(
        name,
        app ?? { grpc: await freePort(), http: await freePort(), admin: await freePort() },
      );
    }
  }
  const edgePort = await freePort();
  const databases = new Map<string, string>();
  const children = new Map<string, ManagedChild>();
  const commands = new Map<string, { args: string[]; env: NodeJS.ProcessEnv; admin: number }>();
  const baseEnv: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? "",
    LOG_LEVEL: "warn",
    ACCESS_LOG: "errors",
    EVENTS_NAMESPACE: namespace,
    CACHE_PREFIX: `${namespace}:catalog:`,
    IDENTITY_REDIS_PREFIX: `${namespace}:identity:`,
    SHUTDOWN_GRACE_MS: "3000",
    ...(options.otlp === undefined ? {} : { OTEL_EXPORTER_OTLP_ENDPOINT: options.otlp.httpUrl }),
    ...options.env,
  };

  for (const spec of specs) {
    const dbName = `${namespace}_${spec.name}`;
    await createDatabase(infra.postgresUrl, dbName);
    databases.set(spec.name, dbName);
    // Without sidecars a service dials its callees' own ports; with them, its sidecar's.
    const known = new Map(
      layout !== undefined
        ? []
        : dependenciesOf(spec.name)
            .filter((d) => ports.has(d))
            .map((d) => [d, ports.get(d) as ServicePorts]),
    );
    for (const name of processesOf(spec.name)) {
      const own = ports.get(name) as ServicePorts;
      const { env } = serviceEnv({
        spec,
        databaseUrl: databaseUrl(infra.postgresUrl, dbName),
        redisUrl: infra.redisUrl,
        natsUrl: infra.natsUrl,
        extra: {
          ...meshSettings(
            spec.name,
            (n) => known.get(n),
            (which) => secrets[which],
            baseEnv,
          ),
          GRPC_PORT: String(own.grpc),
          HTTP_PORT: String(own.http),
          ADMIN_PORT: String(own.admin),
          ...(layout === undefined ? {} : layout.appSettings(instanceOf(name))),
          ...options.serviceEnv?.[spec.name],
        },
        env: baseEnv,
      });
      commands.set(name, {
        args: nodeArgs(entryPoint(spec.name), options.compiled === true),
        env: options.compiled === true ? { ...env, NODE_ENV: "production" } : env,
        admin: own.admin,
      });
    }
  }
  const running = new Map<string, RunningSidecar>();
  const envoyBin = layout === undefined ? "" : toolPath("envoy");
  async function startSidecarOf(process: string): Promise<void> {
    if (running.get(process)?.envoy.child.isRunning()) return;
    running.set(process, await startSidecar(envoyBin, instanceOf(process)));
  }
  const sidecars: Sidecars | undefined =
    layout === undefined
      ? undefined
      : {
          layout,
          instance: instanceOf,
          sidecar(process) {
            const found = running.get(process);
            if (found === undefined) throw new Error(`${process} has no running sidecar`);
            return found;
          },
          async kill(process) {
            const child = running.get(process)?.envoy.child;
            if (child?.isRunning()) {
              globalThis.process.kill(child.pid, "SIGKILL");
              await child.exited;
            }
          },
          start: startSidecarOf,
        };
  async function start(name: string): Promise<void> {
    if (children.get(name)?.isRunning()) return;
    const command = commands.get(name);
    if (command === undefined) throw new Error(`${name} is not in this mesh`);
    const child = spawnManaged({
      name,
      command: process.execPath,
      args: command.args,
      cwd: ROOT,
      env: command.env,
      stopSignal: "SIGTERM",
      stopTimeoutMs: 15_000,
    });
    children.set(name, child);
    const url = `http://127.0.0.1:${command.admin}/readyz`;
    try {
      await child.waitUntil(httpOk(url), READY_TIMEOUT_MS);
    } catch (reason) {
      // An exit can be reported before the last output lines are read.
      await new Promise((resolve) => setTimeout(resolve, 300));
      throw new Error(
        `${name} did not become ready: ${reason instanceof Error ? reason.message : reason}\n${child.recentOutput()}`,
      );
    }
  }

  let edge: TestEdge | undefined;
  let storefront: StaticServer | undefined;
  const mesh: Mesh = {
    namespace,
    infra,
    ports(name) {
      const p = ports.get(name);
      if (p === undefined) throw new Error(`${name} is not in this mesh`);
      return p;
    },
    edgeUrl: `http://127.0.0.1:${edgePort}`,
    get edge() {
      return edge;
    },
    sidecars,
    processes: (name) => processesOf(name),
    databaseUrl(name) {
      const db = databases.get(name);
      if (db === undefined) throw new Error(`${name} is not in this mesh`);
      return databaseUrl(infra.postgresUrl, db);
    },
    async kill(name) {
      const child = children.get(name);
      if (child?.isRunning()) {
        process.kill(child.pid, "SIGKILL");
        await child.exited;
      }
    },
    start,
    isRunning: (name) => children.get(name)?.isRunning() === true,
    output: (name) => children.get(name)?.recentOutput() ?? "",
    async stop() {
      await edge?.close();
      await storefront?.close();
      await Promise.all([...children.values()].map((c) => c.stop()));
      await Promise.all([...running.values()].map((s) => s.envoy.close()));
      if (meshDir !== undefined) rmSync(meshDir, { recursive: true, force: true });
      for (const db of databases.values()) {
        await dropDatabase(infra.postgresUrl, db).catch(() => {});
      }
      const events = await openTestEvents("mesh", { natsUrl: infra.natsUrl, namespace }).catch(
        () => undefined,
      );
      await events?.close();
    },
  };
  try {
    // Sidecars first (apps call through them as they start), then the apps, all at once:
    // ports are fixed up front, and callers retry until callees answer.
    if (layout !== undefined) {
      await Promise.all(layout.instances.map((i) => startSidecarOf(i.process)));
    }
    await Promise.all([...commands.keys()].map(start));
    if (options.edge === true) {
      if (options.storefrontDir !== undefined) {
        storefront = await startStaticServer({ dir: options.storefrontDir, port: 0 });
      }
      edge = await startTestEdge({
        port: edgePort,
        services:
          layout === undefined
            ? new Map([...ports].filter(([name]) => PUBLIC_SERVICES.includes(name)))
            : layout.edgeUpstreams(),
        ...(storefront === undefined ? {} : { storefrontPort: storefront.port }),
        ...(options.otlp === undefined ? {} : { otlpGrpcPort: options.otlp.grpcPort }),
      });
    }
  } catch (reason) {
    await mesh.stop();
    throw reason;
  }
  return mesh;
}

/** node's arguments for `<workspace>/src/<x>.ts`: the source under tsx, or its dist/ build. */
function nodeArgs(source: string, compiled: boolean): string[] {
  if (!compiled) return ["--conditions=development", "--import", "tsx", source];
  const built = source.replace(/\/src\/(.*)\.ts$/, "/dist/src/$1.js");
  if (!existsSync(join(ROOT, built))) throw new Error(`${built} is missing: run \`make build\``);
  return [built];
}
