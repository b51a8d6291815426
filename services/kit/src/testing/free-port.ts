import { readFileSync } from "node:fs";
import { createServer, Socket } from "node:net";

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
 * A TCP port that was free on 127.0.0.1 a moment ago, outside the ephemeral range and
 * never returned twice by this process. Another process can still take it before the
 * caller binds, so callers that start a server on it should retry with a new port when
 * the bind fails.
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = range.low + Math.floor(Math.random() * (range.high - range.low + 1));
    if (handedOut.has(port)) continue;
    if (await canListen(port)) {
      handedOut.add(port);
      return port;
    }
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
