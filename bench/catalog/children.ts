/** Server entries run as child processes pinned to one core. */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

/** What a server entry announced when ready. */
export interface ReadyLine {
  pid: number;
  grpc: number;
  http?: number;
  admin?: number;
}

/** A running server child. */
export interface ServerChild {
  name: string;
  pid: number;
  ready: ReadyLine;
  /** SIGTERM, wait for exit, return the counters it printed on the way out. */
  stop(): Promise<Record<string, unknown>>;
}

const running = new Set<ChildProcess>();

/** Kills (SIGKILL) every server child still running; for the runner's error paths. */
export function killAllServers(): void {
  for (const child of running) child.kill("SIGKILL");
}

/** Where `make bench-build` puts the compiled server entries (bench/tsconfig.build.json). */
const COMPILED_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", ".dist");
const BENCH_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

/**
 * How a server child runs. "compiled" (the default) is what the images run: plain `node`
 * on tsc's output with NODE_ENV=production, the kit and services from their dist/.
 * "source" runs the TypeScript through tsx with the development condition, which is
 * handy while iterating but not what ships: tsx keeps function names by wrapping every
 * closure it creates, and the kit creates several per call (15 % of (b)'s CPU).
 */
export type ServerMode = "compiled" | "source";

/** BENCH_SOURCE=1 selects "source"; anything else the default. */
export function serverMode(): ServerMode {
  return process.env.BENCH_SOURCE === "1" ? "source" : "compiled";
}

/** node's arguments for a server entry given as its bench/…/*.ts source path. */
function nodeArgs(entry: string, mode: ServerMode): string[] {
  if (mode === "source") return ["--conditions=development", "--import", "tsx", entry];
  const compiled = join(COMPILED_ROOT, relative(BENCH_ROOT, entry)).replace(/\.ts$/, ".js");
  if (!existsSync(compiled)) {
    throw new Error(`${compiled} is missing: run \`make bench-build\` (or set BENCH_SOURCE=1)`);
  }
  return [compiled];
}

/**
 * Starts `taskset -c <cpu> node <flags> <entry>` ({@link ServerMode}) and waits for its
 * ready line on stdout. taskset execs node, so the child's pid is the server's.
 */
export async function startServer(options: {
  name: string;
  entry: string;
  cwd: string;
  cpu: string;
  env?: Record<string, string>;
  nodeFlags?: string[];
  timeoutMs?: number;
}): Promise<ServerChild> {
  const mode = serverMode();
  const child = spawn(
    "taskset",
    [
      "-c",
      options.cpu,
      process.execPath,
      ...(options.nodeFlags ?? []),
      ...nodeArgs(options.entry, mode),
    ],
    {
      cwd: options.cwd,
      env: {
        ...process.env,
        ...(mode === "compiled" ? { NODE_ENV: "production" } : {}),
        ...options.env,
      },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  // The server's stderr (warnings, crashes), one prefixed line at a time.
  createInterface({ input: child.stderr as NodeJS.ReadableStream }).on("line", (line) => {
    process.stderr.write(`\n[${options.name}] ${line}\n`);
  });
  running.add(child);
  const exited = once(child, "exit").then(() => running.delete(child));
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  const linesClosed = once(lines, "close");
  let stopped: Record<string, unknown> | undefined;
  const ready = await new Promise<ReadyLine>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${options.name}: not ready after ${options.timeoutMs ?? 90_000} ms`));
    }, options.timeoutMs ?? 90_000);
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${options.name}: exited before it was ready (${code ?? signal})`));
    });
    lines.on("line", (line) => {
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        return;
      }
      const msg = parsed as Record<string, unknown>;
      if (msg.ready === true) {
        clearTimeout(timer);
        resolve(msg as unknown as ReadyLine);
      } else if (msg.stopped === true) {
        stopped = msg;
      }
    });
  });
  const pid = child.pid ?? ready.pid;
  return {
    name: options.name,
    pid,
    ready,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
      await exited;
      clearTimeout(timer);
      // The exit can overtake the last stdout line.
      await linesClosed;
      return stopped ?? {};
    },
  };
}
