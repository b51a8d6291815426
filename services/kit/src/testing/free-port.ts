import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * Where {@link freePort} looks: below the kernel's ephemeral range. A port from bind(0)
 * is an ephemeral one, and until the caller binds it any outgoing connection (to
 * Postgres, NATS, another service) may get it as its local port, which then makes the
 * listen fail with EADDRINUSE. Below the range only a deliberate bind can collide.
 */
function portRange(): { low: number; high: number } {
  let ephemeralLow = 32_768;
  try {
    const [low] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8")
      .trim()
      .split(/\s+/);
    if (low !== undefined && Number.parseInt(low, 10) > 12_000)
      ephemeralLow = Number.parseInt(low, 10);
  } catch {
    // Not Linux: the usual default.
  }
  return { low: 10_000, high: ephemeralLow - 1 };
}

const range = portRange();
/** Ports this process already handed out: never twice, even once they are free again. */
const handedOut = new Set<number>();

/**
 * Ports handed out by any process on this machine, one file each, named by the port and
 * holding the pid: the test runner runs files in parallel, and a port a mesh chose stays
 * its own while the mesh lives, also while a service is down (the chaos tests kill and
 * restart them on the same ports), when a bind test alone would find it free. A file
 * whose process is gone is stale and taken over.
 */
const claimsDir = join(tmpdir(), "meshmart-test-ports");

function claim(port: number): boolean {
  const file = join(claimsDir, String(port));
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(file, String(process.pid), { flag: "wx" });
      claimed.push(file);
      return true;
    } catch (reason) {
      if ((reason as NodeJS.ErrnoException).code !== "EEXIST") return true;
      const owner = Number.parseInt(readFileSyncOrEmpty(file), 10);
      if (Number.isInteger(owner) && owner !== process.pid && isAlive(owner)) return false;
      rmSync(file, { force: true });
    }
  }
  return false;
}

const claimed: string[] = [];
let claimsReady = false;

function prepareClaims(): void {
  if (claimsReady) return;
  claimsReady = true;
  mkdirSync(claimsDir, { recursive: true });
  process.once("exit", () => {
    for (const file of claimed) rmSync(file, { force: true });
  });
}

function readFileSyncOrEmpty(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return "";
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (reason) {
    return (reason as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * A TCP port that was free on 127.0.0.1 a moment ago, outside the ephemeral range, never
 * returned twice by this process nor by another one on this machine while that one lives
 * (see claimsDir). A process that does not use freePort can still take it before the
 * caller binds, so callers that start a server on it should retry with a new port when
 * the bind fails.
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = range.low + Math.floor(Math.random() * (range.high - range.low + 1));
    if (handedOut.has(port)) continue;
    prepareClaims();
    if (!claim(port)) continue;
    handedOut.add(port);
    if (await canListen(port)) return port;
  }
  throw new Error(`no free port in ${range.low}-${range.high} after 200 tries`);
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

/** Whether something accepts TCP connections on host:port within `timeoutMs`. */
export async function isPortOpen(host: string, port: number, timeoutMs = 500): Promise<boolean> {
  const greeting = await exchange(host, port, undefined, () => true, timeoutMs);
  return greeting !== undefined;
}

/**
 * Redis answers `PING` with `+PONG` (and `-NOAUTH` when it needs a password, which we
 * cannot use): true only for a Redis we can talk to without credentials.
 */
export async function redisPing(host: string, port: number, timeoutMs = 1_000): Promise<boolean> {
  const reply = await exchange(host, port, "PING\r\n", (data) => data.includes("\r\n"), timeoutMs);
  return reply?.startsWith("+PONG") ?? false;
}

/**
 * The `INFO {...}` object a NATS server sends first on every connection (no client
 * library needed), or undefined when nothing NATS-like answers.
 */
export async function natsInfo(
  host: string,
  port: number,
  timeoutMs = 1_000,
): Promise<Record<string, unknown> | undefined> {
  const line = await exchange(host, port, undefined, (data) => data.includes("\r\n"), timeoutMs);
  if (line === undefined || !line.startsWith("INFO ")) return undefined;
  try {
    const info: unknown = JSON.parse(line.slice(5, line.indexOf("\r\n")));
    return typeof info === "object" && info !== null
      ? (info as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Connects, optionally writes `request`, and collects data until `done(received)` says so.
 * With no request, `done` is asked once right after connecting too, so a bare connect can
 * succeed without the server saying anything. Undefined on any failure or timeout.
 */
function exchange(
  host: string,
  port: number,
  request: string | undefined,
  done: (received: string) => boolean,
  timeoutMs: number,
): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = new Socket();
    let received = "";
    let settled = false;
    const finish = (value: string | undefined): void => {
      if (settled) return;
      settled = true;
      socket.destroy();
      resolve(value);
    };
    socket.setTimeout(timeoutMs, () => finish(undefined));
    socket.once("error", () => finish(undefined));
    socket.once("close", () => finish(undefined));
    socket.on("data", (chunk: Buffer) => {
      received += chunk.toString("utf8");
      if (done(received)) finish(received);
    });
    socket.connect(port, host, () => {
      if (request === undefined) {
        if (done(received)) finish(received);
      } else {
        socket.write(request);
      }
    });
  });
}
