import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { rm } from "node:fs/promises";

/** How a child process ended. */
export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Set when the process could not be spawned at all (e.g. ENOENT). */
  error?: Error;
}

/** Options for {@link spawnManaged}. */
export interface ManagedChildOptions {
  /** Short label used in errors, e.g. "postgres". */
  name: string;
  command: string;
  args: readonly string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Run as this user (the caller must be root); Postgres refuses to run as root. */
  uid?: number;
  gid?: number;
  /** The signal that asks this program for a clean, prompt shutdown. */
  stopSignal: NodeJS.Signals;
  /** How long {@link ManagedChild.stop} waits before SIGKILL. */
  stopTimeoutMs?: number;
  /** Every output line (stdout and stderr), as it arrives. */
  onLine?: (line: string) => void;
}

/** A child process that is stopped when its parent exits, however it exits. */
export interface ManagedChild {
  readonly name: string;
  readonly pid: number;
  /** Resolves once, when the process has exited. */
  readonly exited: Promise<ChildExit>;
  /** Whether the process is still running. */
  isRunning(): boolean;
  /** The last output lines, for error messages. */
  recentOutput(): string;
  /** Resolves when `pattern` appears in the output; rejects if the child exits or on timeout. */
  waitForLine(pattern: RegExp, timeoutMs: number): Promise<void>;
  /** Polls `probe` until it returns true; rejects if the child exits or on timeout. */
  waitUntil(probe: () => Promise<boolean>, timeoutMs: number): Promise<void>;
  /** Sends the stop signal, escalates to SIGKILL after the timeout, resolves when gone. */
  stop(): Promise<void>;
}

const RECENT_LINES = 40;

/**
 * Starts a long-running helper (postgres, redis-server, nats-server).
 *
 * The child gets its own process group (`detached`), so a Ctrl-C in the terminal reaches
 * only the parent, which can then stop things in order (services before the database they
 * use). In exchange the parent owns cleanup: the child is registered with process exit and
 * signal hooks below. Its handles are unref'd so an owned helper never keeps a test process
 * alive; whoever needs to stay up (scripts/up.ts) keeps its own handle.
 */
export function spawnManaged(options: ManagedChildOptions): ManagedChild {
  const child = spawn(options.command, options.args, {
    env: options.env ?? process.env,
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    ...(options.uid === undefined ? {} : { uid: options.uid }),
    ...(options.gid === undefined ? {} : { gid: options.gid }),
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  const recent: string[] = [];
  const lineWaiters = new Set<(line: string) => void>();
  const onLine = (line: string): void => {
    recent.push(line);
    if (recent.length > RECENT_LINES) recent.shift();
    options.onLine?.(line);
    for (const waiter of lineWaiters) waiter(line);
  };
  for (const stream of [child.stdout, child.stderr]) {
    let buffered = "";
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => {
      buffered += chunk;
      let nl = buffered.indexOf("\n");
      while (nl !== -1) {
        onLine(buffered.slice(0, nl).replace(/\r$/, ""));
        buffered = buffered.slice(nl + 1);
        nl = buffered.indexOf("\n");
      }
    });
    stream.on("end", () => {
      if (buffered !== "") onLine(buffered);
      buffered = "";
    });
    unrefStream(stream);
  }
  child.unref();

  let running = true;
  const exited = new Promise<ChildExit>((resolve) => {
    child.once("error", (error) => {
      running = false;
      resolve({ code: null, signal: null, error });
    });
    child.once("exit", (code, signal) => {
      running = false;
      resolve({ code, signal });
    });
  });

  const managed: ManagedChild = {
    name: options.name,
    pid: child.pid ?? -1,
    exited,
    isRunning: () => running,
    recentOutput: () => recent.join("\n"),
    waitForLine(pattern, timeoutMs) {
      return raceExit(managed, timeoutMs, (resolve) => {
        if (recent.some((line) => pattern.test(line))) {
          resolve();
          return () => {};
        }
        const waiter = (line: string): void => {
          if (pattern.test(line)) resolve();
        };
        lineWaiters.add(waiter);
        return () => lineWaiters.delete(waiter);
      });
    },
    waitUntil(probe, timeoutMs) {
      return raceExit(managed, timeoutMs, (resolve) => {
        let active = true;
        const poll = async (): Promise<void> => {
          while (active) {
            if (await probe().catch(() => false)) {
              resolve();
              return;
            }
            await delay(100);
          }
        };
        void poll();
        return () => {
          active = false;
        };
      });
    },
    async stop() {
      if (running) {
        signalChild(child, options.stopSignal);
        // A ref'd timer on purpose: it keeps the loop alive until the child is really gone.
        const timer = setTimeout(
          () => signalChild(child, "SIGKILL"),
          options.stopTimeoutMs ?? 10_000,
        );
        await exited;
        clearTimeout(timer);
      }
      await exited;
    },
  };

  if (child.pid !== undefined) {
    const entry: LiveChild = { pid: child.pid, stopSignal: options.stopSignal, stop: managed.stop };
    liveChildren.add(entry);
    installExitHooks();
    void exited.then(() => liveChildren.delete(entry));
  }
  return managed;
}

/**
 * Removes `dir` when the process exits (after every managed child is gone, since a
 * database still shutting down would otherwise recreate files in it). Returns a function
 * that cancels the removal, for owners that delete the directory themselves.
 */
export function removeOnExit(dir: string): () => void {
  dirsToRemove.add(dir);
  installExitHooks();
  return () => dirsToRemove.delete(dir);
}

/**
 * Whether a pid belongs to a process that is still running. Zombies (exited, not yet
 * reaped by their parent) count as gone.
 */
export function isProcessAlive(pid: number): boolean {
  if (hasProcFs()) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
      return state !== "Z" && state !== "X";
    } catch {
      return false;
    }
  }
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** The process's command name (`/proc/<pid>/comm`), or undefined when unknown. */
export function processName(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
  } catch {
    return undefined;
  }
}

/** The process's command line, arguments joined by spaces, or undefined when unknown. */
export function processCommandLine(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ").trim();
  } catch {
    return undefined;
  }
}

/**
 * True when the process was left behind by a parent that died (reparented to init or a
 * subreaper that is not Node). Used to tell a helper orphaned by a killed `make up` from
 * one a live `make up` is still using. False when it cannot tell.
 */
export function isOrphan(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    if (ppid === 1) return true;
    const parent = processName(ppid);
    return parent !== undefined && !/node/i.test(parent);
  } catch {
    return false;
  }
}

/** Signals `pid` and waits (polling) until it is gone; SIGKILL after `timeoutMs`. */
export async function stopPid(
  pid: number,
  signal: NodeJS.Signals,
  timeoutMs: number,
): Promise<void> {
  trySignal(pid, signal);
  const deadline = Date.now() + timeoutMs;
  while (isProcessAlive(pid)) {
    if (Date.now() > deadline) {
      trySignal(pid, "SIGKILL");
      await delay(200);
      return;
    }
    await delay(50);
  }
}

/** Resolves after `ms`. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function raceExit(
  child: ManagedChild,
  timeoutMs: number,
  arm: (resolve: () => void) => () => void,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let disarm = (): void => {};
    const settle = (error?: Error): void => {
      clearTimeout(timer);
      disarm();
      if (error === undefined) resolve();
      else reject(error);
    };
    const timer = setTimeout(
      () => settle(new Error(`${child.name} was not ready after ${timeoutMs} ms${tail(child)}`)),
      timeoutMs,
    );
    void child.exited.then((exit) => {
      const how =
        exit.error !== undefined
          ? `could not be started: ${exit.error.message}`
          : `exited (${exit.signal ?? `code ${exit.code}`})`;
      settle(new Error(`${child.name} ${how}${tail(child)}`));
    });
    disarm = arm(() => settle());
  });
}

function tail(child: ManagedChild): string {
  const out = child.recentOutput();
  return out === "" ? "" : `; its last output:\n${out}`;
}

function unrefStream(stream: unknown): void {
  const withUnref = stream as { unref?: () => void };
  withUnref.unref?.();
}

function signalChild(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    child.kill(signal);
  } catch {
    // Already gone.
  }
}

function trySignal(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
}

function hasProcFs(): boolean {
  return existsSync("/proc/self/stat");
}

interface LiveChild {
  pid: number;
  stopSignal: NodeJS.Signals;
  stop(): Promise<void>;
}

const liveChildren = new Set<LiveChild>();
const dirsToRemove = new Set<string>();
let hooksInstalled = false;
const STOP_SIGNALS: readonly NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];

function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  // The loop ran dry with helpers still registered (they are unref'd): a test file that
  // finished, or a script that forgot stop(). Stop them gracefully while we still can.
  process.on("beforeExit", () => {
    if (liveChildren.size === 0 && dirsToRemove.size === 0) return;
    void cleanupAsync();
  });
  // process.exit() or a crash: no async work is possible, so signal and wait synchronously.
  process.on("exit", cleanupSync);
  for (const signal of STOP_SIGNALS) process.on(signal, onSignal);
}

function onSignal(signal: NodeJS.Signals): void {
  // Someone else handles this signal (scripts/up.ts stops services before infra); they own
  // shutdown, and the exit hook still catches whatever they leave behind.
  if (process.listenerCount(signal) > 1) return;
  cleanupSync();
  // Restore the default disposition and re-raise, so the process dies "by signal" as it would
  // have without us (exit status 128+n, which shells and test runners understand).
  for (const s of STOP_SIGNALS) process.removeListener(s, onSignal);
  process.kill(process.pid, signal);
}

async function cleanupAsync(): Promise<void> {
  await Promise.all([...liveChildren].map((c) => c.stop()));
  await Promise.all(
    [...dirsToRemove].map(async (dir) => {
      dirsToRemove.delete(dir);
      await rm(dir, { recursive: true, force: true }).catch(() => {});
    }),
  );
}

function cleanupSync(): void {
  const children = [...liveChildren];
  liveChildren.clear();
  for (const c of children) trySignal(c.pid, c.stopSignal);
  if (dirsToRemove.size === 0) return;
  // Only wait when there is a directory to delete under them; bounded, and only on the
  // abnormal path (a clean run already stopped everything asynchronously).
  const deadline = Date.now() + 3_000;
  while (children.some((c) => isProcessAlive(c.pid)) && Date.now() < deadline) sleepSync(25);
  for (const c of children) if (isProcessAlive(c.pid)) trySignal(c.pid, "SIGKILL");
  for (const dir of dirsToRemove) {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // Best effort; it is a temp dir.
    }
  }
  dirsToRemove.clear();
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** A readiness probe for {@link ManagedChild.waitUntil}: GET `url` answers 200 within 1 s. */
export function httpOk(url: string): () => Promise<boolean> {
  return async () => {
    const res = await fetch(url, { signal: AbortSignal.timeout(1_000) });
    await res.body?.cancel();
    return res.status === 200;
  };
}

/**
 * Waits until `probe` holds; if it never does (or the child exits), stops the child and
 * throws with its last output lines, so a failed start leaves nothing running.
 */
export async function readyOrStopped(
  child: ManagedChild,
  probe: () => Promise<boolean>,
  timeoutMs: number,
): Promise<void> {
  try {
    await child.waitUntil(probe, timeoutMs);
  } catch (reason) {
    // An exit can be reported before the last output lines are read.
    await new Promise((resolve) => setTimeout(resolve, 200));
    await child.stop();
    throw new Error(
      `${child.name} did not become ready: ${reason instanceof Error ? reason.message : reason}\n${child.recentOutput()}`,
    );
  }
}
