/**
 * Small HTTP helpers for the edge's tests: a JSON call read loosely, and raw bytes on a
 * socket for what fetch refuses to send (bare CR, obs-fold, smuggling, NUL).
 */
import { type IncomingHttpHeaders, request } from "node:http";
import { connect } from "node:net";
import type { ServiceHost } from "@meshmart/kit";

/** A port nothing listens on: connections are refused at once, so the edge answers 503. */
export const NO_PORT = 1;

/** A service's ports as the edge takes them. */
export const portsOf = (host: ServiceHost): { grpc: number; http: number } => ({
  grpc: host.grpcPort,
  http: host.httpPort,
});

/** An answer with its body parsed as JSON when it is JSON, else kept as text. */
export interface JsonAnswer {
  status: number;
  headers: Headers;
  text: string;
  // biome-ignore lint/suspicious/noExplicitAny: bodies are asserted field by field
  json: any;
}

/** Options for {@link call}. */
export interface CallInit {
  /** A JSON body (sent with content-type application/json). */
  body?: string;
  token?: string | undefined;
  headers?: Record<string, string>;
}

/** `method path` against `base`, the answer read whole. */
export async function call(
  base: string,
  method: string,
  path: string,
  init: CallInit = {},
): Promise<JsonAnswer> {
  const headers: Record<string, string> = {};
  if (init.body !== undefined) headers["content-type"] = "application/json";
  if (init.token !== undefined) headers.authorization = `Bearer ${init.token}`;
  Object.assign(headers, init.headers);
  const res = await fetch(`${base}${path}`, {
    method,
    headers,
    ...(init.body === undefined ? {} : { body: init.body }),
  });
  const text = await res.text();
  let json: unknown;
  try {
    json = text === "" ? undefined : JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json: json ?? {} };
}

/** What came back on a raw connection: the status line's code, the head and the body. */
export interface RawAnswer {
  status: number;
  head: string;
  body: string;
}

/**
 * Sends `request` as is (latin1) and reads until the edge closes the connection: give
 * requests the edge accepts a `Connection: close`. The socket is not half-closed, which
 * Envoy would take as the client going away.
 */
export function raw(port: number, request: string): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    let data = "";
    socket.setEncoding("latin1");
    socket.setTimeout(5_000, () => socket.destroy());
    socket.on("data", (chunk: string) => {
      data += chunk;
    });
    socket.once("error", reject);
    socket.once("close", () => {
      const at = data.indexOf("\r\n\r\n");
      const head = at < 0 ? data : data.slice(0, at);
      resolve({
        status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0),
        head,
        body: at < 0 ? "" : data.slice(at + 4),
      });
    });
    socket.write(request, "latin1");
  });
}

/** One HTTP/1.1 request for {@link send}. */
export interface SendInit {
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** The client's own address (127.0.0.x): a client the edge's per-IP limits count apart. */
  localAddress?: string;
}

/** An answer of {@link send}, headers as node gives them. */
export interface SendAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** One request on a connection of its own, optionally from another loopback address. */
export function send(port: number, init: SendInit): Promise<SendAnswer> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port,
        method: init.method,
        path: init.path,
        headers: init.headers ?? {},
        agent: false,
        ...(init.localAddress === undefined ? {} : { localAddress: init.localAddress }),
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => {
          text += c;
        });
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }),
        );
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(init.body);
  });
}
