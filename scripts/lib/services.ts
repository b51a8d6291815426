import { existsSync } from "node:fs";
import { join } from "node:path";
import { loadCallGraph } from "../deploy/callgraph.js";

/** A service of the mesh and its local ports. */
export interface ServiceSpec {
  name: string;
  /** gRPC (grpc-js, h2c). The Connect/gRPC-Web port is grpc+100, the admin port grpc+200. */
  grpcPort: number;
  /** An anonymous read to show in `make up`'s "try it" block: `package.Service/Method` and a JSON body. */
  sample?: { method: string; body: string };
}

/**
 * Every service, in dependency order (callees before callers), with its `make up` gRPC
 * port. Ports are fixed so URLs in docs and scripts stay valid from one run to the next.
 */
export const SERVICES: readonly ServiceSpec[] = [
  { name: "identity", grpcPort: 9101 },
  {
    name: "catalog",
    grpcPort: 9102,
    sample: { method: "meshmart.catalog.v1.CatalogService/ListProducts", body: '{"pageSize":3}' },
  },
  { name: "inventory", grpcPort: 9103 },
  { name: "payments", grpcPort: 9104 },
  { name: "orders", grpcPort: 9105 },
  { name: "notifications", grpcPort: 9106 },
];

/** Ports a service listens on. */
export interface ServicePorts {
  grpc: number;
  http: number;
  admin: number;
}

/** The default ports of `spec`: gRPC, Connect/gRPC-Web at +100, admin at +200. */
export function defaultPorts(spec: ServiceSpec): ServicePorts {
  return { grpc: spec.grpcPort, http: spec.grpcPort + 100, admin: spec.grpcPort + 200 };
}

/** The entry point of a service, relative to the repo root. */
export function entryPoint(name: string): string {
  return join("services", name, "src", "main.ts");
}

/** The services whose `services/<name>/src/main.ts` exists under `root`. */
export function implementedServices(root: string): ServiceSpec[] {
  return SERVICES.filter((s) => existsSync(join(root, entryPoint(s.name))));
}

/** Options for {@link serviceEnv}. */
export interface ServiceEnvInput {
  spec: ServiceSpec;
  /** The service's own database. */
  databaseUrl: string;
  redisUrl: string;
  natsUrl: string;
  /** Settings `make up` supplies beyond the common ones (JWKS URL, identity's key). */
  extra?: Record<string, string>;
  /** The user's environment (process.env). */
  env: NodeJS.ProcessEnv;
}

/**
 * The environment a service runs with under `make up`, and the ports that result.
 * Precedence, lowest first: the inherited environment; our values (ports, URLs, name);
 * defaults for LOG_LEVEL and SEED_DEMO unless the user set them; and last, anything the
 * user prefixed with the service's name (CATALOG_GRPC_PORT=9999, CATALOG_LOG_LEVEL=debug),
 * so one service can be tuned without touching the others.
 */
export function serviceEnv(input: ServiceEnvInput): {
  env: NodeJS.ProcessEnv;
  ports: ServicePorts;
} {
  const { spec, env } = input;
  const defaults = defaultPorts(spec);
  const prefix = `${spec.name.toUpperCase().replaceAll("-", "_")}_`;
  const overrides: Record<string, string> = {};
  for (const [key, value] of Object.entries(env)) {
    if (key.startsWith(prefix) && key.length > prefix.length && value !== undefined) {
      overrides[key.slice(prefix.length)] = value;
    }
  }
  const merged: NodeJS.ProcessEnv = {
    ...env,
    SERVICE_NAME: spec.name,
    GRPC_PORT: String(defaults.grpc),
    HTTP_PORT: String(defaults.http),
    ADMIN_PORT: String(defaults.admin),
    DATABASE_URL: input.databaseUrl,
    REDIS_URL: input.redisUrl,
    NATS_URL: input.natsUrl,
    LOG_LEVEL: env.LOG_LEVEL ?? "info",
    SEED_DEMO: env.SEED_DEMO ?? "true",
    ...input.extra,
    ...overrides,
  };
  return {
    env: merged,
    ports: {
      grpc: Number(merged.GRPC_PORT),
      http: Number(merged.HTTP_PORT),
      admin: Number(merged.ADMIN_PORT),
    },
  };
}

/**
 * The ports a service or the edge reports in its "listening" log line, or undefined for
 * any other line. `make up` learns real ports this way, so a port given as 0 (any free
 * one, as tests do) needs no guess that another process could take first.
 */
export function listeningPorts(line: string): ServicePorts | undefined {
  if (!line.startsWith("{") || !line.includes("listening")) return undefined;
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  const { msg } = record;
  if (msg === "listening") {
    const { grpc, http, admin } = record;
    if (typeof grpc === "number" && typeof http === "number" && typeof admin === "number") {
      return { grpc, http, admin };
    }
  }
  if (msg === "edge listening" && typeof record.port === "number") {
    const { port } = record;
    return { grpc: port, http: port, admin: port };
  }
  return undefined;
}

const graph = loadCallGraph();

/**
 * The gRPC calls between services (caller → callees), from deploy/callgraph.yaml: the one
 * declaration the mesh policies are generated from too. Callees start before callers.
 */
export const CALLS: Readonly<Record<string, readonly string[]>> = Object.fromEntries(
  [...graph.services.values()]
    .filter((s) => s.calls.size > 0)
    .map((s) => [s.name, [...s.calls.keys()]]),
);

/** The services whose addresses `name`'s settings contain: identity (JWKS) and its callees. */
export function dependenciesOf(name: string): string[] {
  return [...(name === "identity" ? [] : ["identity"]), ...(CALLS[name] ?? [])];
}

/** Keys a local mesh makes up once and keeps (data encrypted under them must stay readable). */
export type LocalSecret = "identity-kek" | "orders-saga-card-key" | "page-token-key";

/**
 * What a service needs on one machine beyond {@link serviceEnv}'s common settings: the
 * JWKS URL, callee addresses, its encryption keys, demo stock. `portsOf` answers for
 * {@link dependenciesOf}(name) that are running (others are left out).
 */
export function meshSettings(
  name: string,
  portsOf: (service: string) => ServicePorts | undefined,
  secret: (which: LocalSecret) => string,
  env: NodeJS.ProcessEnv,
): Record<string, string> {
  const settings: Record<string, string> = {};
  const identity = name === "identity" ? undefined : portsOf("identity");
  if (identity !== undefined) {
    settings.AUTH_JWKS_URL = `http://127.0.0.1:${identity.http}/.well-known/jwks.json`;
  }
  for (const callee of CALLS[name] ?? []) {
    const ports = portsOf(callee);
    if (ports !== undefined)
      settings[`${callee.toUpperCase()}_URL`] = `http://127.0.0.1:${ports.grpc}`;
  }
  if (name === "identity") settings.IDENTITY_KEY_ENCRYPTION_KEY = secret("identity-kek");
  if (name === "orders") settings.SAGA_CARD_KEY = secret("orders-saga-card-key");
  // One key for the local mesh: a token also names its listing, so sharing it is safe.
  settings.PAGE_TOKEN_KEY = secret("page-token-key");
  // Every demo product starts with stock, so orders placed right after start succeed.
  if (name === "inventory") {
    settings.INITIAL_STOCK_ON_PRODUCT_CREATED = env.INITIAL_STOCK_ON_PRODUCT_CREATED ?? "100";
  }
  return settings;
}

/** The services whose public methods the edge transcodes (the graph's edge entry). */
export const PUBLIC_SERVICES: readonly string[] = [...graph.edge.calls.keys()];
