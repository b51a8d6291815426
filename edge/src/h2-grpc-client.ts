/**
 * A unary gRPC client over node:http2 for the edge's upstream calls. The edge makes one
 * upstream call per REST request, so the client's cost per call is most of the edge's own:
 * @grpc/grpc-js spends about 1.5 times the CPU of plain node:http2 on the same call (its
 * channel, interceptor and resolver layers serve features the edge does not use; see
 * bench/edge/client-compare.ts). This
 * speaks the protocol directly: one HTTP/2 session per upstream, a 5-byte-framed message,
 * grpc-timeout, and the status from trailers (or trailers-only headers). Server-streaming
 * calls (WatchOrder's REST form) read the response frame by frame.
 */
import {
  type ClientHttp2Session,
  connect,
  constants,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
} from "node:http2";
import {
  type DescMessage,
  type DescMethod,
  type DescMethodServerStreaming,
  type DescMethodUnary,
  fromBinary,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { findTrailerError } from "@connectrpc/connect/protocol-grpc";
import type { UpstreamClient } from "./upstreams.js";

/** A gRPC client for one upstream address (`host:port`, h2c). */
export interface H2GrpcClient extends UpstreamClient {
  close(): void;
}

/** Headers the client sets itself; a caller's copies are ignored. */
const RESERVED = new Set([
  "content-type",
  "te",
  "grpc-timeout",
  "user-agent",
  "host",
  "connection",
]);

/** Creates the client; the session is opened on first use and again after it closes. */
export function createH2GrpcClient(address: string): H2GrpcClient {
  let session: ClientHttp2Session | undefined;
  const authority = `http://${address}`;

  const open = (): ClientHttp2Session => {
    if (session !== undefined && !session.closed && !session.destroyed) return session;
    const s = connect(authority);
    // Idle sessions must not keep the process alive, and a broken one is replaced on the
    // next call rather than retried here: the caller's deadline and retries decide.
    s.unref();
    s.setTimeout(5 * 60_000, () => s.close());
    const drop = () => {
      if (session === s) session = undefined;
    };
    s.once("close", drop);
    s.once("goaway", drop);
    s.on("error", drop);
    session = s;
    return s;
  };

  return {
    unary<I extends DescMessage, O extends DescMessage>(
      method: DescMethodUnary<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: Headers | undefined,
      message: MessageShape<I>,
    ): Promise<{ message: MessageShape<O> }> {
      return new Promise((resolve, reject) => {
        if (signal?.aborted) {
          reject(new ConnectError("the request was cancelled", Code.Canceled));
          return;
        }
        const headers = requestHeaders(method, timeoutMs, header);
        const frame = requestFrame(method.input, message);

        let settled = false;
        let responded = false;
        let responseHeaders: IncomingHttpHeaders | undefined;
        let trailers: IncomingHttpHeaders | undefined;
        const chunks: Buffer[] = [];
        let timer: NodeJS.Timeout | undefined;
        const finish = (outcome: () => void) => {
          if (settled) return;
          settled = true;
          if (timer !== undefined) clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
          outcome();
        };

        let stream: ReturnType<ClientHttp2Session["request"]>;
        try {
          stream = open().request(headers);
        } catch (reason) {
          reject(unavailable(reason));
          return;
        }
        const onAbort = () => {
          stream.close(constants.NGHTTP2_CANCEL);
          finish(() => reject(new ConnectError("the request was cancelled", Code.Canceled)));
        };
        signal?.addEventListener("abort", onAbort, { once: true });
        if (timeoutMs !== undefined) {
          // The server enforces grpc-timeout too; this bounds a server that never answers.
          timer = setTimeout(() => {
            stream.close(constants.NGHTTP2_CANCEL);
            finish(() =>
              reject(new ConnectError("upstream request timeout", Code.DeadlineExceeded)),
            );
          }, timeoutMs);
        }
        stream.on("response", (h) => {
          responded = true;
          responseHeaders = h;
        });
        stream.on("trailers", (t) => {
          trailers = t;
        });
        stream.on("data", (chunk: Buffer) => chunks.push(chunk));
        stream.on("error", (err) => {
          finish(() =>
            reject(
              responded
                ? new ConnectError("upstream stream error", Code.Unavailable)
                : unavailable(err),
            ),
          );
        });
        stream.on("close", () => {
          finish(() => {
            if (!responded) {
              reject(unavailable(new Error(`stream closed (${stream.rstCode})`)));
              return;
            }
            try {
              resolve({ message: decode(method.output, responseHeaders, trailers, chunks) });
            } catch (reason) {
              reject(reason);
            }
          });
        });
        stream.end(frame);
      });
    },
    async *serverStream<I extends DescMessage, O extends DescMessage>(
      method: DescMethodServerStreaming<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: Headers | undefined,
      message: MessageShape<I>,
    ): AsyncGenerator<MessageShape<O>> {
      if (signal?.aborted) throw new ConnectError("the request was cancelled", Code.Canceled);
      const headers = requestHeaders(method, timeoutMs, header);
      let stream: ReturnType<ClientHttp2Session["request"]>;
      try {
        stream = open().request(headers);
      } catch (reason) {
        throw unavailable(reason);
      }
      const received: MessageShape<O>[] = [];
      const frames = createFrameReader();
      let responseHeaders: IncomingHttpHeaders | undefined;
      let trailers: IncomingHttpHeaders | undefined;
      let ended = false;
      let failure: unknown;
      let wake: (() => void) | undefined;
      const notify = () => {
        const w = wake;
        wake = undefined;
        w?.();
      };
      const end = (reason?: unknown) => {
        if (ended) return;
        ended = true;
        failure = reason;
        notify();
      };
      const onAbort = () => {
        stream.close(constants.NGHTTP2_CANCEL);
        end(new ConnectError("the request was cancelled", Code.Canceled));
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      const timer =
        timeoutMs === undefined
          ? undefined
          : setTimeout(() => {
              stream.close(constants.NGHTTP2_CANCEL);
              end(new ConnectError("upstream request timeout", Code.DeadlineExceeded));
            }, timeoutMs);
      stream.on("response", (h) => {
        responseHeaders = h;
        const status = Number(h[constants.HTTP2_HEADER_STATUS]);
        if (status !== 200) {
          stream.close(constants.NGHTTP2_CANCEL);
          end(new ConnectError(`upstream answered HTTP ${status}`, Code.Unavailable));
        }
      });
      stream.on("trailers", (t) => {
        trailers = t;
      });
      stream.on("data", (chunk: Buffer) => {
        try {
          for (const bytes of frames.push(chunk)) received.push(fromBinary(method.output, bytes));
        } catch (reason) {
          stream.close(constants.NGHTTP2_CANCEL);
          end(reason instanceof ConnectError ? reason : malformed(reason));
          return;
        }
        // A slow reader downstream: stop reading (HTTP/2 flow control holds the server).
        if (received.length >= MAX_BUFFERED) stream.pause();
        notify();
      });
      stream.on("error", (err) => {
        end(
          responseHeaders === undefined
            ? unavailable(err)
            : new ConnectError("upstream stream error", Code.Unavailable),
        );
      });
      stream.on("close", () => {
        if (responseHeaders === undefined) {
          end(unavailable(new Error(`stream closed (${stream.rstCode})`)));
          return;
        }
        const error = findTrailerError(toHeaders(trailers ?? responseHeaders));
        if (error !== undefined) end(error);
        else if (frames.pending() > 0) end(malformed("a truncated message frame"));
        else end();
      });
      stream.end(requestFrame(method.input, message));
      try {
        for (;;) {
          const next = received.shift();
          if (next !== undefined) {
            if (received.length === 0 && stream.isPaused()) stream.resume();
            yield next;
            continue;
          }
          if (ended) {
            if (failure !== undefined) throw failure;
            return;
          }
          await new Promise<void>((resolve) => {
            wake = resolve;
          });
        }
      } finally {
        if (timer !== undefined) clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        // The consumer stopped early (client gone, error): the upstream call is over too.
        if (!stream.closed) stream.close(constants.NGHTTP2_CANCEL);
      }
    },
    close() {
      session?.close();
      session = undefined;
    },
  };
}

/** Messages a stream holds for a slow reader before it stops reading from the upstream. */
const MAX_BUFFERED = 16;

/** The request's HTTP/2 headers: gRPC's, the deadline, and the caller's (minus reserved ones). */
function requestHeaders(
  method: DescMethod,
  timeoutMs: number | undefined,
  header: Headers | undefined,
): OutgoingHttpHeaders {
  const headers: OutgoingHttpHeaders = {
    [constants.HTTP2_HEADER_METHOD]: "POST",
    [constants.HTTP2_HEADER_PATH]: `/${method.parent.typeName}/${method.name}`,
    "content-type": "application/grpc+proto",
    te: "trailers",
  };
  if (timeoutMs !== undefined) headers["grpc-timeout"] = `${Math.max(1, Math.ceil(timeoutMs))}m`;
  if (header !== undefined) {
    for (const [key, value] of header) if (!RESERVED.has(key)) headers[key] = value;
  }
  return headers;
}

/** The request message as one gRPC length-prefixed frame (flag 0: uncompressed). */
function requestFrame<I extends DescMessage>(schema: I, message: MessageShape<I>): Buffer {
  const body = toBinary(schema, message);
  const frame = Buffer.allocUnsafe(5 + body.byteLength);
  frame.writeUInt8(0, 0);
  frame.writeUInt32BE(body.byteLength, 1);
  frame.set(body, 5);
  return frame;
}

/**
 * Splits a response body into gRPC messages as its chunks arrive: a frame may span
 * chunks, and a chunk may hold several frames.
 */
function createFrameReader() {
  let buffer: Buffer = Buffer.alloc(0);
  return {
    /** The complete messages `chunk` finishes; throws on a compressed or oversized frame. */
    push(chunk: Buffer): Buffer[] {
      buffer = buffer.length === 0 ? chunk : Buffer.concat([buffer, chunk]);
      const messages: Buffer[] = [];
      while (buffer.length >= 5) {
        if ((buffer.readUInt8(0) & 1) === 1) {
          throw new ConnectError("upstream sent a compressed message", Code.Internal);
        }
        const length = buffer.readUInt32BE(1);
        if (length > MAX_MESSAGE_BYTES) {
          throw new ConnectError("upstream sent an oversized message", Code.Internal);
        }
        if (buffer.length < 5 + length) break;
        messages.push(buffer.subarray(5, 5 + length));
        buffer = buffer.subarray(5 + length);
      }
      return messages;
    },
    /** Bytes of an unfinished frame. */
    pending: () => buffer.length,
  };
}

/** The largest message a stream accepts (the edge's response body limit, as in Envoy). */
const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

function malformed(reason: unknown): ConnectError {
  const detail = reason instanceof Error ? reason.message : String(reason);
  return new ConnectError(`upstream sent a malformed message: ${detail}`, Code.Internal);
}

/** The response message, or the error the status in trailers (or trailers-only headers) says. */
function decode<O extends DescMessage>(
  schema: O,
  headers: IncomingHttpHeaders | undefined,
  trailers: IncomingHttpHeaders | undefined,
  chunks: Buffer[],
): MessageShape<O> {
  const status = Number(headers?.[constants.HTTP2_HEADER_STATUS]);
  if (status !== 200) {
    throw new ConnectError(`upstream answered HTTP ${status}`, Code.Unavailable);
  }
  const error = findTrailerError(toHeaders(trailers ?? headers));
  if (error !== undefined) throw error;
  const body = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
  if (body.length < 5) throw new ConnectError("upstream sent no message", Code.Internal);
  if ((body.readUInt8(0) & 1) === 1) {
    throw new ConnectError("upstream sent a compressed message", Code.Internal);
  }
  const length = body.readUInt32BE(1);
  if (body.length !== 5 + length) {
    throw new ConnectError("upstream sent a malformed message frame", Code.Internal);
  }
  return fromBinary(schema, body.subarray(5));
}

function toHeaders(h: IncomingHttpHeaders | undefined): Headers {
  const out = new Headers();
  if (h === undefined) return out;
  for (const [key, value] of Object.entries(h)) {
    if (key.startsWith(":") || value === undefined) continue;
    out.set(key, Array.isArray(value) ? value.join(", ") : String(value));
  }
  return out;
}

/**
 * A failure to reach the upstream at all. The cause marks it as the edge's own (not a
 * status from a service), so its message, which can name internal addresses, is not shown.
 */
function unavailable(reason: unknown): ConnectError {
  const cause = reason instanceof Error ? reason : new Error(String(reason));
  return new ConnectError("upstream connect error", Code.Unavailable, undefined, undefined, cause);
}
