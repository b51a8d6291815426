/**
 * `make up`: the whole mesh on one machine, no cluster.
 *
 *   node --conditions=development --import tsx scripts/up.ts
 *
 * Postgres, Redis and NATS JetStream come from DATABASE_URL / REDIS_URL / NATS_URL when
 * set, else the Redis and NATS already running on their standard ports, else our own
 * (embedded Postgres on :15432 with data in .data/up, redis-server :16379, nats-server
 * :14222; missing binaries are installed with apt-get when possible). Then every service
 * with a `services/<name>/src/main.ts` starts with its own database, and the script waits
 * for each one's /readyz. Ctrl-C stops services, then the infrastructure it started.
 *
 * Environment: LOG_LEVEL, SEED_DEMO, <SERVICE>_<VAR> (e.g. CATALOG_GRPC_PORT) to override
 * one service's setting (a port of 0 means any free one; the summary names the real one), MESHMART_SERVICES=catalog,orders to start only some,
 * MESHMART_LOG=json for raw log lines, MESHMART_DB_PREFIX (default "meshmart") for the
 * per-service database names, MESHMART_UP_EXIT_AFTER_READY=1 to stop right after
 * everything is up (smoke tests), OBSERVE=1 for Jaeger and Prometheus (scripts/observe/),
 * MESH=1 to put every service and the edge behind an Envoy sidecar generated from istio/
 * (scripts/mesh/; REPLICAS=2 also runs two instances of catalog, inventory and payments).
 */
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  createDatabase,
  databaseUrl,
  ensureInfra,
  freePort,
  httpOk,
  type Infra,
  isPortOpen,
  type ManagedChild,
  reapOrphan,
  spawnManaged,
} from "@meshmart/kit/testing";
import { envoyArgs, validateWithEnvoy, writeLocalEnvoyConfig } from "../edge/envoy/local.js";
import { formatLogLine } from "./lib/log-format.js";
import { chosenPort } from "./lib/ports.js";
import {
  dependenciesOf,
  entryPoint,
  implementedServices,
  type LocalSecret,
  listeningPorts,
  meshSettings,
  PUBLIC_SERVICES,
  SERVICES,
  type ServicePorts,
  type ServiceSpec,
  serviceEnv,
} from "./lib/services.js";
import { ENVOY_VERSION, toolPath } from "./lib/tools.js";
import { type LocalMesh, type MeshInstance, planLocalMesh } from "./mesh/local-mesh.js";
import { meshRequested, replicasOf } from "./mesh/up-mesh.js";
import { type Observability, observeRequested, startObservability } from "./observe/observe.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
// Our own ports, away from the standard ones so a system Postgres never collides.
const PORTS = { postgres: 15432, redis: 16379, nats: 14222 };
const READY_TIMEOUT_MS = Number(process.env.MESHMART_UP_READY_TIMEOUT_MS ?? 60_000);
const LAST_LINES = 25;
const jsonLogs = process.env.MESHMART_LOG === "json";
const color = process.stdout.isTTY === true && process.env.NO_COLOR === undefined;

interface RunningService {
  spec: ServiceSpec;
  /** As configured until it logs "listening", then as bound (0 means any free port). */
  ports: ServicePorts;
  listening: boolean;
  child: ManagedChild;
  /** Formatted recent lines, printed when it fails. */
  recent: string[];
  /** Readiness path on the admin port (default /readyz). */
  readyPath?: string;
  /** A sidecar's mesh instance (MESH=1): listed apart in the summary. */
  sidecarOf?: MeshInstance;
}

let infra: Infra | undefined;
/** The sidecar mesh, with MESH=1. */
let mesh: LocalMesh | undefined;
/** Jaeger and Prometheus, with OBSERVE=1. */
let observe: Observability | undefined;
const running: RunningService[] = [];
let shuttingDown = false;
/** web/dist when the storefront was built for the edge to serve. */
let storefront: string | undefined;
let up = false;

const say = (line: string): void => {
  process.stdout.write(`${line}\n`);
};
const bold = (text: string): string => (color ? `\x1b[1m${text}\x1b[0m` : text);

// Our children run in their own process groups, so a Ctrl-C reaches only us and we can
// stop services before the database they are draining into.
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(signal, () => {
    if (shuttingDown) {
      say(`${signal} again: stopping everything now`);
      for (const s of running) if (s.child.isRunning()) process.kill(s.child.pid, "SIGKILL");
      // The exit hook signals whatever infrastructure is still up.
      process.exit(130);
    }
    void shutdown(0, up ? "stopping…" : "interrupted during startup; stopping…");
  });
}
// Nothing else keeps the loop alive when no service runs (children are unref'd).
const keepAlive = setInterval(() => {}, 1 << 30);

async function main(): Promise<void> {
  say(bold("meshmart: starting the local mesh (Ctrl-C stops it)"));
  infra = await ensureInfra({
    dataDir: join(ROOT, ".data", "up"),
    ports: PORTS,
    log: say,
    installMissing: true,
  });
  if (shuttingDown) return;
  if (observeRequested()) {
    observe = await startObservability({ dataDir: join(ROOT, ".data", "up", "observe"), log: say });
  }
  if (shuttingDown) return;

  const only = process.env.MESHMART_SERVICES?.split(",").map((s) => s.trim());
  const specs = implementedServices(ROOT).filter(
    (s) => only === undefined || only.length === 0 || only.includes(s.name),
  );
  const withEdge = only === undefined || only.includes("edge");
  if (meshRequested()) {
    mesh = await startSidecars(specs, withEdge);
    if (shuttingDown) return;
  }
  // Start them all, then wait: tsx start-up is most of each service's start time.
  const starting = [];
  for (const spec of specs) {
    const instances = mesh?.instancesOf(spec.name) ?? [undefined];
    for (const instance of instances) {
      const service = await startService(spec, infra, instance);
      running.push(service);
      const ready = waitReady(service);
      // Awaited below with the others; until then a failure must not count as unhandled.
      ready.catch(() => {});
      starting.push(ready);
    }
  }
  await Promise.all(starting);
  if (shuttingDown) return;
  if (withEdge) {
    const edge = await startEdge();
    running.push(...edge);
    await Promise.all(edge.map(waitReady));
    if (shuttingDown) return;
  }
  await observe?.scrape({
    adminPorts: new Map(running.map((s) => [s.spec.name, s.ports.admin])),
    edgeAdminPort: runningService("edge")?.ports.admin,
    // MESH=1: every sidecar, labelled with its workload as the cluster's PodMonitor does.
    envoys: running
      .filter((s) => s.sidecarOf !== undefined)
      .map((s) => ({
        name: s.spec.name,
        port: s.ports.admin,
        labels: { app: s.sidecarOf?.workload ?? "" },
      })),
  });
  if (shuttingDown) return;
  up = true;
  for (const service of running) watchForDeath(service);
  printSummary(infra);

  if (process.env.MESHMART_UP_EXIT_AFTER_READY === "1") {
    await shutdown(0, "MESHMART_UP_EXIT_AFTER_READY=1: stopping…");
  }
}

/**
 * What the local mesh adds per service: every service verifies tokens against
 * identity's JWKS, and identity gets a key-encryption key made once for this checkout
 * (kept in .data/up, mode 0600; a real deployment takes it from a Secret).
 */
async function localSettings(spec: ServiceSpec): Promise<Record<string, string>> {
  const known = new Map<string, ServicePorts>();
  for (const dependency of dependenciesOf(spec.name)) {
    if (implemented(dependency)) known.set(dependency, await portsOf(dependency));
  }
  return meshSettings(
    spec.name,
    (name) => known.get(name),
    (which) => localSecret(which, SECRET_VARIABLES[which]),
    process.env,
  );
}

/** The variable a user sets to supply each local secret themselves. */
const SECRET_VARIABLES: Record<LocalSecret, string> = {
  "identity-kek": "IDENTITY_KEY_ENCRYPTION_KEY",
  "orders-saga-card-key": "SAGA_CARD_KEY",
  "page-token-key": "PAGE_TOKEN_KEY",
};

function implemented(name: string): boolean {
  return implementedServices(ROOT).some((s) => s.name === name);
}

/**
 * Where `name` listens: its configured ports, or (configured as 0) the ones it reported.
 * Callees start before their callers, so a caller's settings can name them.
 */
async function portsOf(name: string): Promise<ServicePorts> {
  const spec = SERVICES.find((s) => s.name === name);
  if (spec === undefined) throw new Error(`unknown service ${name}`);
  const configured = serviceEnv({
    spec,
    databaseUrl: "",
    redisUrl: "",
    natsUrl: "",
    env: process.env,
  }).ports;
  const running = runningService(name);
  if (running === undefined || Object.values(configured).every((p) => p !== 0)) return configured;
  return whenListening(running);
}

/**
 * A 32-byte key kept in .data/up across runs (data encrypted under it must stay readable
 * after a restart), unless the user's environment sets `variable`.
 */
function localSecret(file: string, variable: string): string {
  const fromEnv = process.env[variable];
  if (fromEnv !== undefined && fromEnv !== "") return fromEnv;
  const path = join(ROOT, ".data", "up", file);
  if (!existsSync(path)) {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, randomBytes(32).toString("base64"), { mode: 0o600 });
  }
  return readFileSync(path, "utf8").trim();
}

/**
 * Starts one instance of a service on its own database. With the sidecar mesh, `instance`
 * gives its app ports (the first instance keeps the usual ones) and its sidecar's
 * listeners as callee and JWKS URLs.
 */
async function startService(
  spec: ServiceSpec,
  infra: Infra,
  instance?: MeshInstance,
): Promise<RunningService> {
  // MESHMART_DB_PREFIX lets a smoke test run beside a real `make up` on one Postgres.
  const dbName = `${process.env.MESHMART_DB_PREFIX ?? "meshmart"}_${spec.name.replaceAll("-", "_")}`;
  const created = await createDatabase(infra.postgresUrl, dbName);
  // A `make up` killed outright (SIGKILL) leaves its services running on their ports.
  const instanceName = instance?.process ?? spec.name;
  await reapOrphan(servicePidFile(instanceName), "node", entryPoint(spec.name), say);
  const configured = serviceEnv({
    spec,
    databaseUrl: databaseUrl(infra.postgresUrl, dbName),
    redisUrl: infra.redisUrl,
    natsUrl: infra.natsUrl,
    extra: { ...(await localSettings(spec)), ...observe?.serviceEnv },
    env: process.env,
  });
  // Behind a sidecar, the ports and callee URLs are the mesh's (after any user override:
  // two replicas must not share a port).
  const env =
    mesh === undefined || instance === undefined
      ? configured.env
      : { ...configured.env, ...mesh.appSettings(instance) };
  const ports: ServicePorts = {
    grpc: Number(env.GRPC_PORT),
    http: Number(env.HTTP_PORT),
    admin: Number(env.ADMIN_PORT),
  };
  const shown = instanceName === spec.name ? spec : { name: instanceName, grpcPort: spec.grpcPort };
  for (const [kind, port] of Object.entries(ports)) {
    if (port !== 0 && (await isPortOpen("127.0.0.1", port))) {
      const variable = `${spec.name.toUpperCase()}_${kind.toUpperCase()}_PORT`;
      throw new StartupError(
        `${spec.name}: port ${port} (${kind}) is already in use — another \`make up\`? ` +
          `Stop it, or move this one with ${variable}=<port>`,
      );
    }
  }
  say(`${shown.name}: database ${dbName} (${created ? "created" : "exists"}); starting…`);
  const grace = Number(env.SHUTDOWN_GRACE_MS ?? 20_000);
  const service = launch(shown, ports, {
    command: process.execPath,
    args: ["--conditions=development", "--import", "tsx", entryPoint(spec.name)],
    cwd: ROOT,
    env,
    stopSignal: "SIGTERM",
    // The service exits by itself at grace + 5 s; SIGKILL only if even that fails.
    stopTimeoutMs: grace + 10_000,
  });
  writeFileSync(servicePidFile(shown.name), String(service.child.pid));
  return service;
}

/** Where a service instance's pid is kept, per database prefix (a smoke test beside `make up` has its own). */
function servicePidFile(name: string): string {
  const dir = join(ROOT, ".data", "up", "pids");
  mkdirSync(dir, { recursive: true });
  return join(dir, `${process.env.MESHMART_DB_PREFIX ?? "meshmart"}-${name}.pid`);
}

/** Spawns a process whose output is shown prefixed and whose "listening" line fills in its ports. */
function launch(
  spec: ServiceSpec,
  ports: ServicePorts,
  options: Omit<Parameters<typeof spawnManaged>[0], "onLine" | "name">,
): RunningService {
  const recent: string[] = [];
  const service: RunningService = {
    spec,
    ports,
    listening: false,
    recent,
    child: undefined as never,
  };
  service.child = spawnManaged({
    ...options,
    name: spec.name,
    onLine: (line) => {
      const heard = listeningPorts(line);
      if (heard !== undefined) {
        service.ports = heard;
        service.listening = true;
      }
      const text = jsonLogs ? line : formatLogLine(spec.name, line, { color });
      recent.push(jsonLogs ? formatLogLine(spec.name, line, { color }) : text);
      if (recent.length > LAST_LINES) recent.shift();
      say(text);
    },
  });
  return service;
}

function runningService(name: string): RunningService | undefined {
  return running.find((s) => s.spec.name === name);
}

/** The ports `service` really listens on, once it has said so. */
async function whenListening(service: RunningService): Promise<ServicePorts> {
  try {
    await service.child.waitUntil(async () => service.listening, READY_TIMEOUT_MS);
  } catch {
    throw await startupFailure(service, "never said it was listening");
  }
  return service.ports;
}

const STOREFRONT_ENTRY = "web/server/main.ts";
const ENVOY_PID = join(ROOT, ".data", "up", "envoy.pid");
const STOREFRONT_PID = join(ROOT, ".data", "up", "storefront.pid");
/** The local CA, certificates and sidecar configs (MESHMART_MESH_DIR lets a smoke test run beside a real `make up`). */
const MESH_DIR = process.env.MESHMART_MESH_DIR ?? join(ROOT, ".data", "up", "mesh");
/** One pid file per sidecar, so a run killed outright leaves no Envoy holding ports. */
const SIDECAR_PIDS = join(MESH_DIR, "pids");

/**
 * The edge: real Envoy on EDGE_PORT (8080), running the config the cluster runs, generated
 * for loopback upstreams into .data/up; the storefront's server behind it on STOREFRONT_PORT.
 */
async function startEdge(): Promise<RunningService[]> {
  const port = await chosenPort(process.env, "EDGE_PORT", 8080);
  const adminPort = await chosenPort(process.env, "EDGE_ADMIN_PORT", 9901);
  const started: RunningService[] = [];
  storefront = buildStorefront();
  let storefrontPort: number | undefined;
  if (storefront !== undefined) {
    await reapOrphan(STOREFRONT_PID, "node", STOREFRONT_ENTRY, say);
    storefrontPort = await chosenPort(process.env, "STOREFRONT_PORT", 9400);
    const site = launch(
      { name: "storefront", grpcPort: storefrontPort },
      { grpc: storefrontPort, http: storefrontPort, admin: storefrontPort },
      {
        command: process.execPath,
        args: ["--conditions=development", "--import", "tsx", STOREFRONT_ENTRY],
        cwd: ROOT,
        env: { ...process.env, STOREFRONT_DIR: storefront, PORT: String(storefrontPort) },
        stopSignal: "SIGTERM",
        stopTimeoutMs: 5_000,
      },
    );
    writeFileSync(STOREFRONT_PID, String(site.child.pid));
    site.listening = true;
    site.readyPath = "/";
    started.push(site);
  }
  const services = running.filter((s) => PUBLIC_SERVICES.includes(s.spec.name));
  const configPath = join(ROOT, ".data", "up", "envoy.yaml");
  // A `make up` killed outright (SIGKILL) cannot stop Envoy, which would keep the edge's
  // ports: stop what an earlier run left behind before taking them.
  await reapOrphan(ENVOY_PID, "envoy", configPath, say);
  const configFile = writeLocalEnvoyConfig(configPath, {
    port,
    adminPort,
    host: process.env.EDGE_HOST ?? "127.0.0.1",
    // MESH=1: the edge dials the services through its own sidecar, with its own identity.
    services: mesh?.edgeUpstreams() ?? new Map(services.map((s) => [s.spec.name, s.ports])),
    ...(storefrontPort === undefined ? {} : { storefrontPort }),
    ...(observe === undefined ? {} : { otlpGrpcPort: observe.otlpGrpcPort }),
  });
  const envoy = toolPath("envoy");
  validateWithEnvoy(envoy, configFile);
  say(`edge: Envoy ${ENVOY_VERSION} on http://127.0.0.1:${port} (config ${configFile}); starting…`);
  const edge = launch(
    { name: "edge", grpcPort: port },
    { grpc: port, http: port, admin: adminPort },
    envoyProcess(
      configFile,
      Number(process.env.EDGE_CONCURRENCY ?? 1),
      process.env.EDGE_LOG_LEVEL ?? "warn",
    ),
  );
  writeFileSync(ENVOY_PID, String(edge.child.pid));
  edge.listening = true;
  // Envoy's admin answers /ready once its listeners are up.
  edge.readyPath = "/ready";
  started.push(edge);
  return started;
}

/** How `make up` runs an Envoy (the edge, a sidecar): 2 s to drain, SIGTERM, then 10 s. */
function envoyProcess(configFile: string, concurrency: number, logLevel: string) {
  return {
    command: toolPath("envoy"),
    args: envoyArgs({ configFile, concurrency, logLevel, drainSeconds: 2 }),
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? "" },
    stopSignal: "SIGTERM" as const,
    stopTimeoutMs: 10_000,
  };
}

/**
 * Builds the storefront (vite, about a second) for the edge to serve at `/`; undefined,
 * with the reason said, when it cannot be built — the API works without it.
 */
function buildStorefront(): string | undefined {
  const vite = join(ROOT, "node_modules", ".bin", "vite");
  if (!existsSync(vite) || !existsSync(join(ROOT, "web", "index.html"))) return undefined;
  say("storefront: building web/ …");
  const built = spawnSync(vite, ["build", "--logLevel", "warn"], {
    cwd: join(ROOT, "web"),
    stdio: ["ignore", "inherit", "inherit"],
  });
  if (built.status !== 0) {
    say("storefront: build failed; the edge serves the API only");
    return undefined;
  }
  return join(ROOT, "web", "dist");
}

/** Waits for 200 from the service's admin /readyz (Envoy: its admin /ready). */
async function waitReady(service: RunningService): Promise<void> {
  const { spec, child } = service;
  const began = Date.now();
  const { admin } = await whenListening(service);
  const url = `http://127.0.0.1:${admin}${service.readyPath ?? "/readyz"}`;
  say(`${spec.name}: waiting for readiness on ${url}…`);
  try {
    await child.waitUntil(httpOk(url), READY_TIMEOUT_MS);
  } catch {
    if (shuttingDown) return;
    throw await startupFailure(service, `not ready (GET ${url} never returned 200)`);
  }
  say(`${spec.name}: ready in ${((Date.now() - began) / 1000).toFixed(1)} s`);
}

async function startupFailure(service: RunningService, notReady: string): Promise<StartupError> {
  const { child, spec } = service;
  const exit = child.isRunning() ? undefined : await child.exited;
  const why =
    exit === undefined
      ? `${notReady} after ${READY_TIMEOUT_MS / 1000} s`
      : `exited during startup (${exit.signal ?? `code ${exit.code}`})`;
  return new StartupError(`${spec.name}: ${why}`, service);
}

function watchForDeath(service: RunningService): void {
  void service.child.exited.then((exit) => {
    if (shuttingDown) return;
    reportFailure(
      `${service.spec.name}: exited unexpectedly (${exit.signal ?? `code ${exit.code}`})`,
      service,
    );
    void shutdown(1, "shutting everything down…");
  });
}

/**
 * MESH=1: a local CA, a certificate and a generated Envoy config per instance (in
 * .data/up/mesh), and every sidecar started and ready before the apps that dial them.
 */
async function startSidecars(specs: ServiceSpec[], withEdge: boolean): Promise<LocalMesh> {
  const dir = MESH_DIR;
  mkdirSync(SIDECAR_PIDS, { recursive: true });
  for (const file of readdirSync(SIDECAR_PIDS)) {
    await reapOrphan(join(SIDECAR_PIDS, file), "envoy", dir, say);
    rmSync(join(SIDECAR_PIDS, file), { force: true });
  }
  const planned = await planLocalMesh({
    services: specs.map((s) => s.name),
    replicas: (name) => replicasOf(name),
    edge: withEdge,
    dir,
    freePort,
    // The first instance keeps the service's usual ports, so `make up`'s URLs stay valid.
    appPorts: async (name, index) => {
      const spec = specs.find((s) => s.name === name);
      const usual =
        index === 0 && spec !== undefined
          ? serviceEnv({ spec, databaseUrl: "", redisUrl: "", natsUrl: "", env: process.env }).ports
          : { grpc: 0, http: 0, admin: 0 };
      // 0 (any free port) is decided here: the sidecar's config names the app's ports.
      const or = async (port: number) => (port === 0 ? freePort() : port);
      return {
        grpc: await or(usual.grpc),
        http: await or(usual.http),
        admin: await or(usual.admin),
      };
    },
    accessLog: process.env.MESH_ACCESS_LOG === "1",
  });
  // About 0.1 s each: a config Envoy refuses is reported before anything starts.
  for (const instance of planned.instances) {
    validateWithEnvoy(toolPath("envoy"), instance.configFile);
  }
  say(
    `mesh: ${planned.instances.length} sidecars (Envoy ${ENVOY_VERSION}), CA ${planned.ca.rootFile}`,
  );
  const sidecars: RunningService[] = [];
  for (const instance of planned.instances) {
    const sidecar = launch(
      { name: `${instance.instance}.sidecar`, grpcPort: instance.sidecarAdmin },
      {
        grpc: instance.inbound?.grpc ?? 0,
        http: instance.inbound?.http ?? 0,
        admin: instance.sidecarAdmin,
      },
      envoyProcess(instance.configFile, 1, process.env.MESH_LOG_LEVEL ?? "error"),
    );
    writeFileSync(join(SIDECAR_PIDS, `${instance.instance}.pid`), String(sidecar.child.pid));
    sidecar.listening = true;
    sidecar.readyPath = "/ready";
    sidecar.sidecarOf = instance;
    sidecars.push(sidecar);
  }
  running.push(...sidecars);
  await Promise.all(sidecars.map(waitReady));
  return planned;
}

function printSummary(infra: Infra): void {
  const edge = running.find((s) => s.spec.name === "edge");
  const sidecars = running.filter((s) => s.sidecarOf !== undefined);
  const services = running.filter(
    (s) => s !== edge && s.spec.name !== "storefront" && s.sidecarOf === undefined,
  );
  const rest =
    edge === undefined
      ? []
      : [
          `REST http://127.0.0.1:${edge.ports.http}`,
          `Envoy admin http://127.0.0.1:${edge.ports.admin}`,
          ...(storefront === undefined ? [] : [`storefront http://127.0.0.1:${edge.ports.http}/`]),
        ];
  rest.push(...(observe?.summary() ?? []));
  const parts = services.map(
    ({ spec, ports }) =>
      `${spec.name} grpc 127.0.0.1:${ports.grpc}, connect http://127.0.0.1:${ports.http}, admin http://127.0.0.1:${ports.admin}`,
  );
  const none =
    process.env.MESHMART_SERVICES === undefined
      ? "no service has src/main.ts yet"
      : "MESHMART_SERVICES selects none";
  const what = parts.length > 0 ? [...rest, ...parts].join("; ") : `infrastructure only (${none})`;
  const meshed = sidecars.length > 0 ? ` (MESH=1, ${sidecars.length} sidecars)` : "";
  say(bold(`meshmart is up${meshed} — ${what}`));
  const pgUrl = infra.started.includes("postgres") ? infra.postgresUrl : "(DATABASE_URL)";
  say(`  postgres ${pgUrl} · redis ${infra.redisUrl} · nats ${infra.natsUrl}`);
  if (mesh !== undefined) {
    say(`  sidecars (mTLS from the local CA ${mesh.ca.rootFile}; Envoy admin for stats):`);
    for (const { sidecarOf: i, ports } of sidecars) {
      if (i === undefined) continue;
      const inbound =
        i.inbound === undefined
          ? "outbound only"
          : `mTLS grpc 127.0.0.1:${i.inbound.grpc}, http 127.0.0.1:${i.inbound.http}`;
      say(
        `    ${i.instance} (${i.identity.id}): ${inbound}, admin http://127.0.0.1:${ports.admin}`,
      );
    }
  }
  const first = services[0];
  if (first !== undefined) {
    say("  try it:");
    if (edge !== undefined) {
      say(`    curl -s 'http://127.0.0.1:${edge.ports.http}/v1/products?page_size=2'`);
    }
    const grpcurl = ".data/tools/bin/grpcurl -plaintext";
    say(`    ${grpcurl} 127.0.0.1:${first.ports.grpc} list`);
    for (const { spec, ports } of services) {
      if (spec.sample === undefined) continue;
      const body = `'${spec.sample.body}'`;
      say(`    ${grpcurl} -d ${body} 127.0.0.1:${ports.grpc} ${spec.sample.method}`);
      say(
        `    curl -s -H 'content-type: application/json' -d ${body} http://127.0.0.1:${ports.http}/${spec.sample.method}`,
      );
    }
    say(`    curl -s http://127.0.0.1:${first.ports.admin}/readyz`);
  }
  say("  Ctrl-C stops everything.");
}

async function shutdown(code: number, message: string): Promise<never> {
  shuttingDown = true;
  say(message);
  // Services first: they drain into Postgres and NATS, which must still be there, and
  // through their sidecars, which go last (as istio-proxy waits for its app).
  await Promise.all(running.filter((s) => !s.sidecarOf).map((s) => s.child.stop()));
  await Promise.all(running.filter((s) => s.sidecarOf).map((s) => s.child.stop()));
  await observe?.stop();
  await infra?.stop();
  clearInterval(keepAlive);
  if (infra?.started.length) say(`stopped ${infra.started.join(", ")}`);
  process.exit(code);
}

function reportFailure(message: string, service?: RunningService): void {
  console.error(message);
  if (service !== undefined && service.recent.length > 0) {
    console.error(`  last lines of ${service.spec.name}:`);
    for (const line of service.recent) console.error(`  ${line}`);
  }
}

class StartupError extends Error {
  constructor(
    message: string,
    readonly service?: RunningService,
  ) {
    super(message);
  }
}

main().catch((error: unknown) => {
  if (shuttingDown) return;
  if (error instanceof StartupError) reportFailure(error.message, error.service);
  else console.error(error instanceof Error ? error.message : error);
  void shutdown(1, "startup failed; stopping what was started…");
});
