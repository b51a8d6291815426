/**
 * Loads deploy/callgraph.yaml, the single declaration of who calls which gRPC methods (and
 * who may fetch the storefront), and checks it against the contracts: every service's
 * methods are all classified, every call names a real method, `public` expands to the
 * methods with a google.api.http rule.
 */
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { type DescService, hasOption } from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { http } from "@meshmart/kit/gen/google/api/annotations_pb.js";
import { CatalogService } from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_service_pb.js";
import { IdentityService } from "@meshmart/kit/gen/meshmart/identity/v1/identity_service_pb.js";
import { InventoryService } from "@meshmart/kit/gen/meshmart/inventory/v1/inventory_service_pb.js";
import { NotificationService } from "@meshmart/kit/gen/meshmart/notifications/v1/notifications_service_pb.js";
import { OrderService } from "@meshmart/kit/gen/meshmart/orders/v1/orders_service_pb.js";
import { PaymentService } from "@meshmart/kit/gen/meshmart/payments/v1/payments_service_pb.js";
import { parse } from "yaml";
import { z } from "zod";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const CALLGRAPH_FILE = join(REPO_ROOT, "deploy/callgraph.yaml");

/** Every gRPC service of the mesh, by fully qualified name. */
export const SERVICE_DESCRIPTORS: ReadonlyMap<string, DescService> = new Map(
  [
    IdentityService,
    CatalogService,
    InventoryService,
    PaymentService,
    OrderService,
    NotificationService,
  ].map((d) => [d.typeName, d] as const),
);

const name = z.string().regex(/^[a-z][a-z0-9-]{1,40}$/);
const methodSpec = z.strictObject({
  idempotent: z.boolean(),
  timeoutMs: z.number().int().min(0).max(600_000),
  streaming: z.boolean().optional(),
});
const dataStore = z.enum(["postgres", "redis", "nats"]);
const portName = z.enum(["grpc", "http"]);
const serviceSpec = z.strictObject({
  grpcService: z.string().regex(/^meshmart\.[a-z0-9_]+\.v[0-9]+\.[A-Za-z]+$/),
  uses: z.array(dataStore),
  publishes: z.array(z.string()),
  consumes: z.array(z.string()),
  localOnlyConsumes: z.array(z.string()).optional(),
  methods: z.record(z.string(), methodSpec),
  calls: z.record(name, z.array(z.string())),
});
const graphSchema = z.strictObject({
  namespace: name,
  dataNamespace: name,
  ports: z.strictObject({
    grpc: z.number().int(),
    http: z.number().int(),
    admin: z.number().int(),
  }),
  services: z.record(name, serviceSpec),
  edge: z.strictObject({
    port: z.number().int(),
    // grpc always: REST is transcoded to gRPC. http (Connect) is the choice.
    ports: z
      .array(portName)
      .refine(
        (p) => p.includes("grpc"),
        "edge.ports must include grpc (REST is transcoded to gRPC)",
      ),
    calls: z.record(name, z.union([z.literal("public"), z.array(z.string())])),
  }),
  storefront: z.strictObject({
    port: z.number().int(),
    callers: z.array(name).min(1),
    // A static file server: reads only.
    methods: z.array(z.enum(["GET", "HEAD"])).min(1),
  }),
  jwks: z.strictObject({
    service: name,
    path: z.string().startsWith("/"),
    callers: z.array(name),
  }),
});

/** The file as written. */
export type RawCallGraph = z.infer<typeof graphSchema>;
export type MethodSpec = z.infer<typeof methodSpec>;
export type DataStore = z.infer<typeof dataStore>;
/** A named port of every service pod (`ports` in the graph). */
export type PortName = z.infer<typeof portName>;

/** One service of the graph, with its methods resolved against the descriptors. */
export interface GraphService {
  name: string;
  grpcService: string;
  uses: DataStore[];
  publishes: string[];
  consumes: string[];
  /** Subjects consumed only in local runs (a setting the cluster leaves off). */
  localOnlyConsumes: string[];
  methods: ReadonlyMap<string, MethodSpec>;
  /** callee → method names (short, e.g. GetProduct). */
  calls: ReadonlyMap<string, readonly string[]>;
}

/** The graph with `public` expanded and every name checked. */
export interface CallGraph {
  namespace: string;
  dataNamespace: string;
  ports: RawCallGraph["ports"];
  services: ReadonlyMap<string, GraphService>;
  edge: {
    port: number;
    /** The callees' ports the edge calls its methods on (each of them, the same methods). */
    ports: readonly PortName[];
    calls: ReadonlyMap<string, readonly string[]>;
  };
  storefront: { port: number; callers: readonly string[]; methods: readonly string[] };
  jwks: RawCallGraph["jwks"];
}

/** The name the edge has as a caller (its service account and workload label). */
export const EDGE = "edge";
/** The storefront's workload, Service and service account name. */
export const STOREFRONT = "storefront";

/** Reads and checks deploy/callgraph.yaml (or `text`). Throws listing the first problem. */
export function loadCallGraph(text: string = readFileSync(CALLGRAPH_FILE, "utf8")): CallGraph {
  return resolveCallGraph(graphSchema.parse(parse(text)));
}

/** Checks a parsed graph against the service descriptors and expands `public`. */
export function resolveCallGraph(raw: RawCallGraph): CallGraph {
  const services = new Map<string, GraphService>();
  for (const [svcName, spec] of Object.entries(raw.services)) {
    const desc = SERVICE_DESCRIPTORS.get(spec.grpcService);
    if (desc === undefined) throw new Error(`${svcName}: unknown gRPC service ${spec.grpcService}`);
    const declared = new Set(Object.keys(spec.methods));
    for (const m of desc.methods) {
      if (!declared.has(m.name)) {
        throw new Error(
          `${svcName}: method ${m.name} is not declared in deploy/callgraph.yaml (say whether it is idempotent and its timeout)`,
        );
      }
      const streaming = m.methodKind === "server_streaming" || m.methodKind === "bidi_streaming";
      const entry = spec.methods[m.name];
      if (entry !== undefined && (entry.streaming ?? false) !== streaming) {
        throw new Error(`${svcName}.${m.name}: streaming must be ${streaming}`);
      }
      if (entry !== undefined && entry.timeoutMs === 0 && !streaming) {
        throw new Error(`${svcName}.${m.name}: only streaming methods may have no timeout`);
      }
      // The proto's idempotency_level is the contract clients see (Connect GET, retries in
      // their own libraries); the mesh must not be more careful than the contract says.
      if (
        entry !== undefined &&
        !entry.idempotent &&
        m.idempotency !== MethodOptions_IdempotencyLevel.IDEMPOTENCY_UNKNOWN
      ) {
        throw new Error(
          `${svcName}.${m.name}: the proto declares idempotency_level ${MethodOptions_IdempotencyLevel[m.idempotency]}, so it must be idempotent: true`,
        );
      }
    }
    for (const m of declared) {
      if (!desc.methods.some((d) => d.name === m)) {
        throw new Error(`${svcName}: ${m} is not a method of ${spec.grpcService}`);
      }
    }
    services.set(svcName, {
      name: svcName,
      grpcService: spec.grpcService,
      uses: spec.uses,
      publishes: spec.publishes,
      consumes: spec.consumes,
      localOnlyConsumes: spec.localOnlyConsumes ?? [],
      methods: new Map(Object.entries(spec.methods)),
      calls: new Map(Object.entries(spec.calls)),
    });
  }
  for (const svc of services.values()) {
    for (const [callee, methods] of svc.calls) checkCall(services, svc.name, callee, methods);
  }
  const edgeCalls = new Map<string, readonly string[]>();
  for (const [callee, methods] of Object.entries(raw.edge.calls)) {
    const target = services.get(callee);
    if (target === undefined) throw new Error(`edge calls unknown service ${callee}`);
    const pub = publicMethods(target.grpcService);
    const list = methods === "public" ? pub : methods;
    for (const m of list) {
      if (!pub.includes(m)) throw new Error(`edge may call only transcoded methods; ${m} is not`);
    }
    checkCall(services, EDGE, callee, list);
    edgeCalls.set(callee, list);
  }
  for (const reserved of [EDGE, STOREFRONT]) {
    if (services.has(reserved))
      throw new Error(`${reserved} is a workload of its own, not a service`);
  }
  for (const caller of raw.storefront.callers) {
    if (caller !== EDGE && !services.has(caller))
      throw new Error(`storefront caller ${caller} unknown`);
  }
  if (!services.has(raw.jwks.service)) throw new Error(`jwks.service ${raw.jwks.service} unknown`);
  for (const caller of raw.jwks.callers) {
    if (caller !== EDGE && !services.has(caller)) throw new Error(`jwks caller ${caller} unknown`);
  }
  return {
    namespace: raw.namespace,
    dataNamespace: raw.dataNamespace,
    ports: raw.ports,
    services,
    edge: { port: raw.edge.port, ports: [...new Set(raw.edge.ports)], calls: edgeCalls },
    storefront: raw.storefront,
    jwks: raw.jwks,
  };
}

function checkCall(
  services: ReadonlyMap<string, GraphService>,
  caller: string,
  callee: string,
  methods: readonly string[],
): void {
  const target = services.get(callee);
  if (target === undefined) throw new Error(`${caller} calls unknown service ${callee}`);
  if (callee === caller) throw new Error(`${caller} calls itself`);
  if (methods.length === 0) throw new Error(`${caller} → ${callee}: no methods`);
  for (const m of methods) {
    if (!target.methods.has(m)) throw new Error(`${caller} → ${callee}.${m}: no such method`);
  }
}

/** Methods of `grpcService` with a google.api.http rule: what the edge transcodes. */
export function publicMethods(grpcService: string): string[] {
  const desc = SERVICE_DESCRIPTORS.get(grpcService);
  if (desc === undefined) throw new Error(`unknown gRPC service ${grpcService}`);
  return desc.methods.filter((m) => hasOption(m, http)).map((m) => m.name);
}

/**
 * Methods of `grpcService` whose proto says idempotency_level NO_SIDE_EFFECTS: the ones a
 * Connect client may call with GET (Connect servers refuse GET for the others).
 */
export function readOnlyMethods(grpcService: string): string[] {
  const desc = SERVICE_DESCRIPTORS.get(grpcService);
  if (desc === undefined) throw new Error(`unknown gRPC service ${grpcService}`);
  return desc.methods
    .filter((m) => m.idempotency === MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS)
    .map((m) => m.name);
}

/** The gRPC path of a method: `/meshmart.catalog.v1.CatalogService/GetProduct`. */
export function methodPath(grpcService: string, method: string): string {
  return `/${grpcService}/${method}`;
}

/** Every caller of `callee` (services and the edge) with the methods each may call. */
export function callersOf(graph: CallGraph, callee: string): Map<string, readonly string[]> {
  const out = new Map<string, readonly string[]>();
  for (const svc of graph.services.values()) {
    const methods = svc.calls.get(callee);
    if (methods !== undefined) out.set(svc.name, methods);
  }
  const fromEdge = graph.edge.calls.get(callee);
  if (fromEdge !== undefined) out.set(EDGE, fromEdge);
  return out;
}

/** The port numbers the edge calls its callees' methods on. */
export function edgePorts(graph: CallGraph): number[] {
  return graph.edge.ports.map((p) => graph.ports[p]);
}

/** Whether `caller` may fetch the storefront. */
export function fetchesStorefront(graph: CallGraph, caller: string): boolean {
  return graph.storefront.callers.includes(caller);
}

/** The workloads `caller` sends gRPC to. */
export function calleesOf(graph: CallGraph, caller: string): string[] {
  if (caller === EDGE) return [...graph.edge.calls.keys()];
  return [...(graph.services.get(caller)?.calls.keys() ?? [])];
}

/** The Istio principal of a workload's service account. */
export function principal(namespace: string, serviceAccount: string): string {
  return `cluster.local/ns/${namespace}/sa/${serviceAccount}`;
}

/** Kubernetes DNS name of a service of the mesh. */
export function serviceHost(graph: CallGraph, svc: string, namespace = graph.namespace): string {
  return `${svc}.${namespace}.svc.cluster.local`;
}
