/**
 * The sidecar mesh on one machine (`make up MESH=1`, the mesh tests): where every app
 * instance and its Envoy sidecar listen, their identities from a local CA, their configs,
 * and the sidecar processes. The apps themselves are started by the caller (scripts/up.ts,
 * tests/support/mesh.ts) with the ports and callee URLs {@link LocalMesh.appSettings} gives.
 *
 * Each instance's app listens on loopback ports that only its sidecar should use; its
 * sidecar takes mTLS on its own inbound ports (one per pod port) and gives the app one
 * plaintext loopback listener per callee port. Without network namespaces nothing stops a
 * local process from dialing an app port directly: the mesh's guarantees hold for traffic
 * that goes through the sidecars (every call between services, and the edge's), which is
 * what the tests exercise.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type LocalEdge, startEnvoy } from "../../edge/envoy/local.js";
import { EDGE, loadCallGraph } from "../deploy/callgraph.js";
import { serviceSettings } from "../deploy/manifests.js";
import { createLocalCa, type IdentityFiles, type LocalCa } from "./local-ca.js";
import {
  egressServices,
  type IstioPolicy,
  istioPolicy,
  type SidecarPlan,
  sidecarBootstrap,
} from "./sidecar-config.js";

/** Loopback ports of one app process. */
export interface AppPorts {
  grpc: number;
  http: number;
  admin: number;
}

/** One instance of a workload: its app's ports and its sidecar's. */
export interface MeshInstance {
  workload: string;
  /** `catalog-0`, `catalog-1`: sidecar names, node ids, stats. */
  instance: string;
  index: number;
  /** The app's process name as `make up` and the tests call it: `catalog`, `catalog-1`. */
  process: string;
  /** Where the app listens (absent for the edge: its Envoy is started by the caller). */
  app: AppPorts | undefined;
  /** The sidecar's mTLS listeners, by pod port name. */
  inbound: { grpc: number; http: number } | undefined;
  /** The plaintext listeners the app dials, per callee. */
  outbound: ReadonlyMap<string, { grpc: number; http: number }>;
  sidecarAdmin: number;
  identity: IdentityFiles;
  /** The sidecar's generated config. */
  configFile: string;
}

/** A replica's process name: the workload for the first, `<workload>-<index>` after it. */
export function processName(workload: string, index: number): string {
  return index === 0 ? workload : `${workload}-${index}`;
}

/** Options for {@link planLocalMesh}. */
export interface LocalMeshOptions {
  /** Services (workloads) to run; the edge is added when {@link edge} is true. */
  services: readonly string[];
  /** Instances per service (default 1). */
  replicas?: (service: string) => number;
  /** Give the edge a sidecar of its own (its Envoy dials the services through it). */
  edge: boolean;
  /** Where the CA, the certificates and the configs go. */
  dir: string;
  /** A free port; called once per listener. */
  freePort: () => Promise<number>;
  /** The app ports of an instance (default: three free ports). */
  appPorts?: (service: string, index: number) => Promise<AppPorts>;
  /** Per-request access logs on each sidecar's stdout. */
  accessLog?: boolean;
  policy?: IstioPolicy;
}

/** A planned mesh: ports, identities and configs, ready to start. */
export interface LocalMesh {
  readonly namespace: string;
  readonly ca: LocalCa;
  readonly policy: IstioPolicy;
  readonly instances: readonly MeshInstance[];
  instancesOf(workload: string): MeshInstance[];
  /** GRPC_PORT, HTTP_PORT, ADMIN_PORT and the callee/JWKS URLs for one app instance. */
  appSettings(instance: MeshInstance): Record<string, string>;
  /** The edge sidecar's outbound ports per public service (what the edge Envoy dials). */
  edgeUpstreams(): Map<string, { grpc: number; http: number }>;
}

const POD_PORTS = { grpc: 9000, http: 9001 } as const;

/** Plans every instance, issues its certificate and writes its sidecar config. */
export async function planLocalMesh(options: LocalMeshOptions): Promise<LocalMesh> {
  const graph = loadCallGraph();
  const policy = options.policy ?? istioPolicy(graph);
  const ns = graph.namespace;
  mkdirSync(options.dir, { recursive: true });
  const ca = createLocalCa(join(options.dir, "ca"));
  const running = new Set(options.services);
  const instances: MeshInstance[] = [];
  const workloads = [...options.services, ...(options.edge ? [EDGE] : [])];
  for (const workload of workloads) {
    const count = workload === EDGE ? 1 : Math.max(1, options.replicas?.(workload) ?? 1);
    const identity = ca.issue(ns, workload);
    for (let index = 0; index < count; index += 1) {
      const app =
        workload === EDGE
          ? undefined
          : ((await options.appPorts?.(workload, index)) ?? {
              grpc: await options.freePort(),
              http: await options.freePort(),
              admin: await options.freePort(),
            });
      const inbound =
        workload === EDGE
          ? undefined
          : { grpc: await options.freePort(), http: await options.freePort() };
      const outbound = new Map<string, { grpc: number; http: number }>();
      for (const callee of egressServices(policy, workload)) {
        if (!running.has(callee)) continue;
        outbound.set(callee, { grpc: await options.freePort(), http: await options.freePort() });
      }
      const instance = `${workload}-${index}`;
      instances.push({
        workload,
        instance,
        index,
        process: processName(workload, index),
        app,
        inbound,
        outbound,
        sidecarAdmin: await options.freePort(),
        identity,
        configFile: join(options.dir, `${instance}.sidecar.json`),
      });
    }
  }
  const instancesOf = (workload: string) => instances.filter((i) => i.workload === workload);
  for (const instance of instances) {
    const plan: SidecarPlan = {
      workload: instance.workload,
      instance: instance.instance,
      adminPort: instance.sidecarAdmin,
      tls: {
        certFile: instance.identity.certFile,
        keyFile: instance.identity.keyFile,
        rootFile: ca.rootFile,
      },
      inbound:
        instance.inbound === undefined || instance.app === undefined
          ? []
          : [
              {
                podPort: POD_PORTS.grpc,
                listen: instance.inbound.grpc,
                app: instance.app.grpc,
                http2: true,
              },
              {
                podPort: POD_PORTS.http,
                listen: instance.inbound.http,
                app: instance.app.http,
                http2: false,
              },
            ],
      outbound: [...instance.outbound].flatMap(([service, ports]) => [
        { service, podPort: POD_PORTS.grpc, listen: ports.grpc },
        { service, podPort: POD_PORTS.http, listen: ports.http },
      ]),
      endpoints: (service, podPort) =>
        instancesOf(service).map((i) => {
          if (i.inbound === undefined) throw new Error(`${service} takes no calls`);
          return podPort === POD_PORTS.grpc ? i.inbound.grpc : i.inbound.http;
        }),
      ...(options.accessLog === undefined ? {} : { accessLog: options.accessLog }),
    };
    writeFileSync(instance.configFile, JSON.stringify(sidecarBootstrap(policy, plan), null, 2));
  }
  return {
    namespace: ns,
    ca,
    policy,
    instances,
    instancesOf,
    appSettings(instance) {
      if (instance.app === undefined) throw new Error(`${instance.instance} has no app`);
      const settings: Record<string, string> = {
        GRPC_PORT: String(instance.app.grpc),
        HTTP_PORT: String(instance.app.http),
        ADMIN_PORT: String(instance.app.admin),
      };
      // What the cluster tells a service about its sidecar (payments reads XFCC).
      const svc = graph.services.get(instance.workload);
      const cluster = svc === undefined ? {} : serviceSettings(graph, svc);
      for (const key of ["MESH_PEER_IDENTITY", "REFUND_SERVICE_ACCOUNTS"]) {
        const value = cluster[key];
        if (value !== undefined) settings[key] = value;
      }
      for (const [callee, ports] of instance.outbound) {
        if (callee === graph.jwks.service && graph.jwks.callers.includes(instance.workload)) {
          settings.AUTH_JWKS_URL = `http://127.0.0.1:${ports.http}${graph.jwks.path}`;
        }
        if (graph.services.get(instance.workload)?.calls.has(callee)) {
          settings[`${callee.toUpperCase()}_URL`] = `http://127.0.0.1:${ports.grpc}`;
        }
      }
      return settings;
    },
    edgeUpstreams() {
      const edge = instancesOf(EDGE)[0];
      if (edge === undefined) throw new Error("the mesh has no edge sidecar");
      return new Map(edge.outbound);
    },
  };
}

/** A running sidecar. */
export interface RunningSidecar {
  readonly instance: MeshInstance;
  readonly envoy: LocalEdge;
}

/** Starts one instance's sidecar (Envoy, one worker thread as istio-proxy's default of 2 would starve this machine). */
export async function startSidecar(
  envoyBin: string,
  instance: MeshInstance,
  options: { onLine?: (line: string) => void; concurrency?: number } = {},
): Promise<RunningSidecar> {
  const envoy = await startEnvoy({
    envoyBin,
    configFile: instance.configFile,
    adminPort: instance.sidecarAdmin,
    port: instance.inbound?.grpc ?? 0,
    name: `${instance.instance}-sidecar`,
    concurrency: options.concurrency ?? 1,
    ...(options.onLine === undefined ? {} : { onLine: options.onLine }),
  });
  return { instance, envoy };
}
