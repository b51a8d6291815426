/**
 * Dev and test infrastructure: Postgres, Redis and NATS JetStream for `make up`,
 * `make test` and individual test files. Never imported by production code paths.
 *
 * The rule everywhere: use what the user configured, else reuse what already runs on the
 * standard local port, else start our own (and stop only what we started).
 */
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { ensureExecutable } from "./apt.js";
import {
  isOrphan,
  isProcessAlive,
  type ManagedChild,
  processCommandLine,
  processName,
  removeOnExit,
  spawnManaged,
  stopPid,
} from "./children.js";
import {
  canConnectPostgres,
  createDatabase,
  databaseUrl,
  dropDatabase,
  uniqueName,
} from "./databases.js";
import { dataDirProblem, type OwnedPostgres, startOwnedPostgres } from "./embedded-postgres.js";
import { freePort, isPortOpen, natsInfo, redisPing } from "./free-port.js";

export {
  createDatabase,
  databaseUrl,
  dropDatabase,
  quoteIdentifier,
  uniqueName,
} from "./databases.js";
export {
  type OwnedPostgres,
  type OwnedPostgresOptions,
  startOwnedPostgres,
} from "./embedded-postgres.js";
export { freePort, isPortOpen, natsInfo, redisPing } from "./free-port.js";

const LOCALHOST = "127.0.0.1";
const STANDARD = { postgres: 5432, redis: 6379, nats: 4222 } as const;

/** Ports our own Postgres, Redis and NATS listen on when we have to start them. */
export interface InfraPorts {
  postgres: number;
  redis: number;
  nats: number;
}

/** Options for {@link ensureInfra}. */
export interface EnsureInfraOptions {
  /** Root for persistent state: `<dataDir>/postgres`, `<dataDir>/nats`, `<dataDir>/redis`. */
  dataDir: string;
  ports: InfraPorts;
  /** Progress, one line per step. */
  log: (line: string) => void;
  /** apt-get install nats-server / redis-server when missing (root + Debian only). */
  installMissing: boolean;
  /**
   * Use these as they are instead of finding or starting anything (an unset one is found or
   * started). When omitted: the DATABASE_URL (an admin URL), REDIS_URL and NATS_URL
   * environment variables.
   */
  urls?: { postgres?: string | undefined; redis?: string | undefined; nats?: string | undefined };
  /** Names of the variables behind `urls`, for messages. Defaults to the three above. */
  envNames?: { postgres: string; redis: string; nats: string };
  /** Keep fsync on in the embedded Postgres (default true; the test runner turns it off). */
  durable?: boolean;
  /**
   * Reuse a Redis on 6379 and a NATS on 4222 when they answer. Default true, unless
   * MESHMART_REUSE_LOCAL=0 (for when those hold something you would rather not share).
   */
  reuseLocal?: boolean;
}

/** What {@link ensureInfra} found or started. */
export interface Infra {
  /** Superuser URL (database `postgres`); create per-service databases on it. */
  postgresUrl: string;
  redisUrl: string;
  natsUrl: string;
  /** The components this call started (and {@link stop} will stop): "postgres", "redis", "nats". */
  started: string[];
  /** How each was obtained, e.g. "embedded on :15432 (started)", "reusing 127.0.0.1:6379". */
  describe: { postgres: string; redis: string; nats: string };
  /** Stops, gracefully, only what this call started. */
  stop(): Promise<void>;
}

interface Component {
  url: string;
  describe: string;
  stop?: () => Promise<void>;
}

/**
 * Finds or starts Postgres, Redis and NATS JetStream on this machine.
 *
 * Postgres: the configured URL, else an embedded cluster on `ports.postgres` whose data
 * lives in `<dataDir>/postgres` (initialised once, reused). A system Postgres on 5432 is not
 * reused: its auth is unknown and we need superuser to create databases.
 * Redis: the configured URL, else one answering PING on 127.0.0.1:6379, else redis-server
 * on `ports.redis` (no persistence). NATS: the configured URL, else one with JetStream on
 * 127.0.0.1:4222, else nats-server -js on `ports.nats` (store in `<dataDir>/nats`).
 *
 * What it starts is stopped by {@link Infra.stop}, and in any case when this process exits.
 */
export async function ensureInfra(options: EnsureInfraOptions): Promise<Infra> {
  const envNames = options.envNames ?? {
    postgres: "DATABASE_URL",
    redis: "REDIS_URL",
    nats: "NATS_URL",
  };
  const urls = options.urls ?? {
    postgres: process.env.DATABASE_URL,
    redis: process.env.REDIS_URL,
    nats: process.env.NATS_URL,
  };
  const dataDir = resolve(options.dataDir);
  const log = options.log;

  // In parallel: the first Postgres initdb dominates, the other two are quick.
  const announce = (name: string) => (component: Component) => {
    log(`${name}: ${component.describe}`);
    return component;
  };
  const settled = await Promise.allSettled([
    ensurePostgres(urls.postgres, envNames.postgres, dataDir, options).then(announce("postgres")),
    ensureRedis(urls.redis, envNames.redis, dataDir, options).then(announce("redis")),
    ensureNats(urls.nats, envNames.nats, dataDir, options).then(announce("nats")),
  ]);
  const [pg, redis, nats] = settled;
  if (pg.status === "rejected" || redis.status === "rejected" || nats.status === "rejected") {
    // Do not leave half an environment behind.
    await Promise.all(
      settled.map((s) => (s.status === "fulfilled" ? s.value.stop?.() : undefined)),
    );
    const failed = settled.find((s) => s.status === "rejected") as PromiseRejectedResult;
    throw failed.reason;
  }
  const components = { postgres: pg.value, redis: redis.value, nats: nats.value };
  const started = (["postgres", "redis", "nats"] as const).filter(
    (name) => components[name].stop !== undefined,
  );
  let stopping: Promise<void> | undefined;
  return {
    postgresUrl: pg.value.url,
    redisUrl: redis.value.url,
    natsUrl: nats.value.url,
    started: [...started],
    describe: {
      postgres: pg.value.describe,
      redis: redis.value.describe,
      nats: nats.value.describe,
    },
    stop() {
      stopping ??= Promise.all(started.map((name) => components[name].stop?.())).then(() => {});
      return stopping;
    },
  };
}

async function ensurePostgres(
  configured: string | undefined,
  envName: string,
  dataDir: string,
  options: EnsureInfraOptions,
): Promise<Component> {
  if (configured !== undefined && configured !== "") {
    if (!(await canConnectPostgres(configured))) {
      throw new Error(
        `${envName} is set, but no Postgres accepts connections at ${safeUrl(configured)}`,
      );
    }
    return { url: configured, describe: `using ${envName} (${safeUrl(configured)})` };
  }
  let dir = join(dataDir, "postgres");
  const problem = await dataDirProblem(dir);
  if (problem !== undefined) {
    // Keep it persistent, just somewhere the server user can reach; stable per data dir.
    const key = createHash("sha256").update(dir).digest("hex").slice(0, 12);
    const fallback = join("/var/tmp", `meshmart-${key}`, "postgres");
    options.log(`postgres: ${problem}; keeping its data in ${fallback} instead`);
    dir = fallback;
  }
  const firstRun = !existsSync(join(dir, "PG_VERSION"));
  if (firstRun)
    options.log(`postgres: initialising an embedded cluster in ${display(dir)} (first run)…`);
  const port = options.ports.postgres;
  const began = Date.now();
  let server: OwnedPostgres;
  try {
    server = await startOwnedPostgres({
      port,
      dataDir: dir,
      durable: options.durable ?? true,
      notice: (line) => options.log(`postgres: ${line}`),
    });
  } catch (error) {
    if (/could not (bind|create listen socket)|Address already in use/i.test(String(error))) {
      throw new Error(
        `port ${port} is taken by another program, so the embedded Postgres cannot start there; ` +
          `stop that program or set ${envName} to a Postgres superuser URL`,
      );
    }
    throw error;
  }
  const seconds = ((Date.now() - began) / 1000).toFixed(1);
  return {
    url: server.url,
    describe: `embedded on :${port} (started${firstRun ? ", new cluster" : ""}, ${seconds} s)`,
    stop: () => server.stop(),
  };
}

async function ensureRedis(
  configured: string | undefined,
  envName: string,
  dataDir: string,
  options: EnsureInfraOptions,
): Promise<Component> {
  if (configured !== undefined && configured !== "") {
    return { url: configured, describe: `using ${envName} (${safeUrl(configured)})` };
  }
  if (reuseLocal(options) && (await redisPing(LOCALHOST, STANDARD.redis))) {
    return {
      url: `redis://${LOCALHOST}:${STANDARD.redis}`,
      describe: `reusing ${LOCALHOST}:${STANDARD.redis}`,
    };
  }
  const port = options.ports.redis;
  const dir = join(dataDir, "redis");
  await mkdir(dir, { recursive: true });
  const pidFile = join(dir, "redis.pid");
  await reapOrphan(pidFile, "redis-server", `:${port}`, options.log);
  if (await redisPing(LOCALHOST, port)) {
    // Another `make up`/`make test` of this checkout is running; share it, it is stateless.
    return { url: `redis://${LOCALHOST}:${port}`, describe: `reusing ${LOCALHOST}:${port}` };
  }
  const child = await startRedis(port, dir, {
    installMissing: options.installMissing,
    log: options.log,
    alternative: `or set ${envName}`,
    pidFile,
  });
  return {
    url: `redis://${LOCALHOST}:${port}`,
    describe: `redis-server on :${port} (started)`,
    stop: () => child.stop(),
  };
}

async function ensureNats(
  configured: string | undefined,
  envName: string,
  dataDir: string,
  options: EnsureInfraOptions,
): Promise<Component> {
  if (configured !== undefined && configured !== "") {
    return { url: configured, describe: `using ${envName} (${safeUrl(configured)})` };
  }
  const standard = reuseLocal(options) ? await natsInfo(LOCALHOST, STANDARD.nats) : undefined;
  if (standard?.jetstream === true) {
    return {
      url: `nats://${LOCALHOST}:${STANDARD.nats}`,
      describe: `reusing ${LOCALHOST}:${STANDARD.nats} (JetStream)`,
    };
  }
  if (standard !== undefined) {
    options.log(`nats: ${LOCALHOST}:${STANDARD.nats} runs without JetStream; starting our own`);
  }
  const port = options.ports.nats;
  const dir = join(dataDir, "nats");
  await mkdir(dir, { recursive: true });
  const pidFile = join(dir, "nats-server.pid");
  await reapOrphan(pidFile, "nats-server", dir, options.log);
  if ((await natsInfo(LOCALHOST, port))?.jetstream === true) {
    return {
      url: `nats://${LOCALHOST}:${port}`,
      describe: `reusing ${LOCALHOST}:${port} (JetStream)`,
    };
  }
  const child = await startNats(port, dir, {
    installMissing: options.installMissing,
    log: options.log,
    alternative: `or set ${envName}`,
    pidFile,
  });
  return {
    url: `nats://${LOCALHOST}:${port}`,
    describe: `nats-server -js on :${port} (started)`,
    stop: () => child.stop(),
  };
}

/** How a helper binary is found or installed, and where its pid goes. */
export interface StartHelperOptions {
  installMissing: boolean;
  log: (line: string) => void;
  alternative: string;
  pidFile?: string;
}

async function startRedis(
  port: number,
  dir: string,
  options: StartHelperOptions,
): Promise<ManagedChild> {
  const binary = await ensureExecutable("redis-server", "redis-server", options);
  const child = spawnManaged({
    name: `redis-server :${port}`,
    command: binary,
    args: [
      "--port",
      String(port),
      "--bind",
      LOCALHOST,
      // A cache: nothing is worth persisting, and nothing is written to disk.
      "--save",
      "",
      "--appendonly",
      "no",
      "--dir",
      dir,
      ...(options.pidFile === undefined ? [] : ["--pidfile", options.pidFile]),
      "--loglevel",
      "warning",
    ],
    stopSignal: "SIGTERM",
    stopTimeoutMs: 5_000,
  });
  await ready(child, () => redisPing(LOCALHOST, port, 300), port);
  return child;
}

/**
 * nats-server with JetStream on loopback `port`, storing in `storeDir`; resolves once it
 * answers. `config`: a nats.conf (`-c`; the flags here still win) and the environment it reads.
 */
export async function startNats(
  port: number,
  storeDir: string,
  options: StartHelperOptions,
  config?: { file: string; env: Record<string, string> },
): Promise<ManagedChild> {
  const binary = await ensureExecutable("nats-server", "nats-server", options);
  const child = spawnManaged({
    name: `nats-server :${port}`,
    command: binary,
    args: [
      "-js",
      "-a",
      LOCALHOST,
      "-p",
      String(port),
      "-sd",
      storeDir,
      ...(options.pidFile === undefined ? [] : ["-P", options.pidFile]),
      ...(config === undefined ? [] : ["-c", config.file]),
    ],
    ...(config === undefined ? {} : { env: { ...process.env, ...config.env } }),
    stopSignal: "SIGTERM",
    stopTimeoutMs: 10_000,
  });
  await ready(child, async () => (await natsInfo(LOCALHOST, port, 300))?.jetstream === true, port);
  return child;
}

async function ready(child: ManagedChild, probe: () => Promise<boolean>, port: number) {
  try {
    await child.waitUntil(probe, 20_000);
  } catch (error) {
    await child.stop();
    if (/address already in use/i.test(child.recentOutput())) {
      throw new Error(`${child.name}: port ${port} is taken by another program`);
    }
    throw error;
  }
}

/**
 * Stops a helper a killed earlier run left behind, found through its pid file: only a live
 * process named `comm` whose command line mentions `mention`, and only when its parent died
 * (a helper a live run still uses is left alone).
 */
export async function reapOrphan(
  pidFile: string,
  comm: string,
  mention: string,
  log: (line: string) => void,
) {
  let pid: number;
  try {
    pid = Number((await readFile(pidFile, "utf8")).trim());
  } catch {
    return;
  }
  if (!Number.isInteger(pid) || pid <= 0 || !isProcessAlive(pid)) return;
  // The pid may have been reused (after a reboot, by the system's own redis-server, say):
  // only a process of ours, named so and started with our port or directory, qualifies.
  if (processName(pid) !== comm || !processCommandLine(pid)?.includes(mention)) return;
  if (!isOrphan(pid)) return;
  log(`${comm}: stopping pid ${pid}, left running by an earlier run that was killed`);
  await stopPid(pid, "SIGTERM", 10_000);
}

function reuseLocal(options: { reuseLocal?: boolean } = {}): boolean {
  return options.reuseLocal ?? process.env.MESHMART_REUSE_LOCAL !== "0";
}

/** A URL without its password, for messages. */
function safeUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== "") u.password = "***";
    return u.toString();
  } catch {
    return "(unparseable URL)";
  }
}

function display(path: string): string {
  const rel = relative(process.cwd(), path);
  return rel !== "" && !rel.startsWith("..") ? rel : path;
}

// ---------------------------------------------------------------------------------------
// Per-test-file helpers. The test runner exports TEST_* URLs; a test file run on its own
// (node --test services/x/test/y.test.ts) falls back to the standard local ports, then
// to helpers started once per process and stopped when it exits.
// ---------------------------------------------------------------------------------------

let testPostgres: Promise<string> | undefined;
let testRedis: Promise<string> | undefined;
let testNats: Promise<string> | undefined;

/** A fresh database for one test; {@link TestDatabase.drop} removes it. */
export interface TestDatabase {
  /** URL of the new database. */
  url: string;
  name: string;
  drop(): Promise<void>;
}

/**
 * Creates a uniquely named database (`${prefix}_${pid}_${random}`) on the Postgres at
 * TEST_DATABASE_URL, else on 127.0.0.1:5432 as user postgres if that works, else on an
 * embedded Postgres started once for this process.
 */
export async function createTestDatabase(prefix: string): Promise<TestDatabase> {
  const adminUrl = await testPostgresUrl();
  const name = uniqueName(prefix);
  await createDatabase(adminUrl, name);
  return { url: databaseUrl(adminUrl, name), name, drop: () => dropDatabase(adminUrl, name) };
}

/** The admin URL {@link createTestDatabase} creates databases on. */
export function testPostgresUrl(): Promise<string> {
  testPostgres ??= (async () => {
    const configured = process.env.TEST_DATABASE_URL;
    if (configured !== undefined && configured !== "") return configured;
    const standard = `postgres://postgres@${LOCALHOST}:${STANDARD.postgres}/postgres`;
    const reachable = reuseLocal() && (await isPortOpen(LOCALHOST, STANDARD.postgres));
    if (reachable && (await canConnectPostgres(standard))) {
      return standard;
    }
    const owned = await startOwnedPostgres();
    return owned.url;
  })();
  return testPostgres;
}

/** Redis for tests: TEST_REDIS_URL, else 127.0.0.1:6379, else one started for this process. */
export function testRedisUrl(): Promise<string> {
  testRedis ??= (async () => {
    const configured = process.env.TEST_REDIS_URL;
    if (configured !== undefined && configured !== "") return configured;
    if (reuseLocal() && (await redisPing(LOCALHOST, STANDARD.redis))) {
      return `redis://${LOCALHOST}:${STANDARD.redis}`;
    }
    const port = await freePort();
    await startRedis(port, tmpdir(), {
      installMissing: false,
      log: () => {},
      alternative: "or set TEST_REDIS_URL",
    });
    return `redis://${LOCALHOST}:${port}`;
  })();
  return testRedis;
}

/** NATS (JetStream) for tests: TEST_NATS_URL, else 127.0.0.1:4222, else one for this process. */
export function testNatsUrl(): Promise<string> {
  testNats ??= (async () => {
    const configured = process.env.TEST_NATS_URL;
    if (configured !== undefined && configured !== "") return configured;
    if (reuseLocal() && (await natsInfo(LOCALHOST, STANDARD.nats))?.jetstream === true) {
      return `nats://${LOCALHOST}:${STANDARD.nats}`;
    }
    const port = await freePort();
    const store = await mkdtemp(join(tmpdir(), "meshmart-nats-"));
    removeOnExit(store);
    await startNats(port, store, {
      installMissing: false,
      log: () => {},
      alternative: "or set TEST_NATS_URL",
    });
    return `nats://${LOCALHOST}:${port}`;
  })();
  return testNats;
}
