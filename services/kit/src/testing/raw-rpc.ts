import { connect as connectHttp2 } from "node:http2";
import type { DescMethod } from "@bufbuild/protobuf";

/** What a server answered to one raw call: the status code name and message, as each protocol says them. */
export interface RawAnswer {
  /** HTTP status of the response. */
  http: number;
  /** gRPC status number (gRPC, gRPC-Web) or Connect code name (Connect). */
  status: string;
  message: string;
}

/** One length-prefixed message (gRPC, gRPC-Web and Connect streaming framing). */
export function envelope(bytes: Uint8Array, flags = 0): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt8(flags, 0);
  head.writeUInt32BE(bytes.byteLength, 1);
  return Buffer.concat([head, bytes]);
}

function* envelopes(body: Buffer): Generator<{ flags: number; data: Buffer }> {
  let at = 0;
  while (at + 5 <= body.length) {
    const flags = body.readUInt8(at);
    const length = body.readUInt32BE(at + 1);
    yield { flags, data: body.subarray(at + 5, at + 5 + length) };
    at += 5 + length;
  }
}

/** `bytes` as the request body of `method` over the Connect protocol (unary or streaming framing). */
export async function connectCall(
  baseUrl: string,
  method: DescMethod,
  bytes: Uint8Array,
): Promise<RawAnswer> {
  const streaming = method.methodKind !== "unary";
  const res = await fetch(`${baseUrl}/${method.parent.typeName}/${method.name}`, {
    method: "POST",
    headers: {
      "content-type": streaming ? "application/connect+proto" : "application/proto",
      "connect-protocol-version": "1",
    },
    body: streaming ? envelope(bytes) : bytes,
  });
  const body = Buffer.from(await res.arrayBuffer());
  if (!streaming) {
    if (res.status === 200) return { http: 200, status: "ok", message: "" };
    const err = JSON.parse(body.toString("utf8")) as { code: string; message?: string };
    return { http: res.status, status: err.code, message: err.message ?? "" };
  }
  for (const { flags, data } of envelopes(body)) {
    if ((flags & 0b10) === 0) continue;
    const end = JSON.parse(data.toString("utf8")) as { error?: { code: string; message?: string } };
    return {
      http: res.status,
      status: end.error?.code ?? "ok",
      message: end.error?.message ?? "",
    };
  }
  throw new Error(`no end-stream message in a ${res.status} response`);
}

/** `bytes` as the request of `method` over gRPC-Web. */
export async function grpcWebCall(
  baseUrl: string,
  method: DescMethod,
  bytes: Uint8Array,
): Promise<RawAnswer> {
  const res = await fetch(`${baseUrl}/${method.parent.typeName}/${method.name}`, {
    method: "POST",
    headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1" },
    body: envelope(bytes),
  });
  const body = Buffer.from(await res.arrayBuffer());
  const trailer = new Map<string, string>();
  for (const [k, v] of res.headers) trailer.set(k, v);
  for (const { flags, data } of envelopes(body)) {
    if ((flags & 0x80) === 0) continue;
    for (const line of data.toString("utf8").split("\r\n")) {
      const colon = line.indexOf(":");
      if (colon > 0)
        trailer.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
    }
  }
  return {
    http: res.status,
    status: trailer.get("grpc-status") ?? "(none)",
    message: decodeURIComponent(trailer.get("grpc-message") ?? ""),
  };
}

/** `bytes` as the request of `method` over gRPC (HTTP/2 prior knowledge) to `target` (`host:port`). */
export function grpcCall(
  target: string,
  method: DescMethod,
  bytes: Uint8Array,
): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const session = connectHttp2(`http://${target}`);
    session.on("error", reject);
    const stream = session.request({
      ":method": "POST",
      ":path": `/${method.parent.typeName}/${method.name}`,
      "content-type": "application/grpc",
      te: "trailers",
    });
    let http = 0;
    const seen = new Map<string, string>();
    const take = (headers: Record<string, unknown>) => {
      for (const [k, v] of Object.entries(headers)) if (typeof v === "string") seen.set(k, v);
    };
    stream.on("response", (headers) => {
      http = Number(headers[":status"]);
      take(headers);
    });
    stream.on("trailers", take);
    stream.on("data", () => {});
    stream.on("error", reject);
    stream.on("close", () => {
      session.close();
      resolve({
        http,
        status: seen.get("grpc-status") ?? "(none)",
        message: decodeURIComponent(seen.get("grpc-message") ?? ""),
      });
    });
    stream.end(envelope(bytes));
  });
}
