import { createServer, Socket } from "node:net";

/**
 * A TCP port that was free on 127.0.0.1 a moment ago (the kernel picks it; we close it
 * again). Another process can take it before the caller binds, so callers that start a
 * server on it should retry with a new port when the bind fails.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error("no port assigned"))));
    });
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
