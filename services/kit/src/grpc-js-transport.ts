import {
  create,
  type DescMessage,
  type DescMethodStreaming,
  type DescMethodUnary,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import {
  Code,
  ConnectError,
  type ContextValues,
  createContextValues,
  type Interceptor,
  type StreamResponse,
  type Transport,
  type UnaryRequest,
  type UnaryResponse,
} from "@connectrpc/connect";
import {
  createDeadlineSignal,
  createLinkedAbortController,
  createMethodUrl,
  getAbortSignalReason,
} from "@connectrpc/connect/protocol";
import { findTrailerError } from "@connectrpc/connect/protocol-grpc";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { metadataToHeaders } from "./server/grpc-adapter.js";

/** Options for {@link createGrpcJsTransport}. */
export interface GrpcJsTransportOptions {
  /** `http://host:port` (or `https://`); no path, since gRPC routes by `/package.Service/Method`. */
  baseUrl: string;
  /** Run on every call in Connect's order: the first one is the outermost. */
  interceptors?: Interceptor[];
  /** Timeout for calls that set none, as Connect's `defaultTimeoutMs`. */
  defaultTimeoutMs?: number;
  /** PING interval while calls are open (`grpc.keepalive_time_ms`). */
  keepaliveMs?: number;
  /** How long a PING may go unanswered before the connection is dropped. */
  keepaliveTimeoutMs?: number;
  /** Idle time after which the channel drops its connection (`grpc.client_idle_timeout_ms`). */
  idleTimeoutMs?: number;
}

/** A Connect {@link Transport} that can also release its HTTP/2 channel. */
export interface GrpcJsTransport extends Transport {
  /** Closes the channel; calls made afterwards fail. */
  close(): void;
}

// Set by grpc-js from the call itself, or forbidden in HTTP/2 (connection-specific):
// Connect's transport adds the first four to req.header, so interceptors may see them.
const reservedHeaders = new Set([
  "content-type",
  "te",
  "user-agent",
  "grpc-timeout",
  "grpc-encoding",
  "grpc-accept-encoding",
  "content-length",
  "connection",
  "keep-alive",
  "transfer-encoding",
  "upgrade",
  "host",
]);

// The DOM lib's HeadersInit, which this project's Node-only lib does not declare.
type HeaderInit = ConstructorParameters<typeof Headers>[0];

interface MethodSite {
  path: string;
  url: string;
  serialize: (message: unknown) => Buffer;
  deserialize: (bytes: Buffer) => unknown;
}

// grpc-js fires its own timer at the deadline it was given; a millisecond of clock skew
// between that timer and Date.now() must not turn Connect's timeout error into its text.
const DEADLINE_SLACK_MS = 5;

/**
 * A Connect {@link Transport} on @grpc/grpc-js's generic client: one HTTP/2 channel,
 * unary calls through `makeUnaryRequest`, so `createClient(desc, transport)` works
 * unchanged at a fraction of connect-node's CPU per call (no async-iterable pipelines,
 * no per-call AbortControllers unless an interceptor asks for `req.signal`).
 *
 * Behaves as connect-node's gRPC transport: interceptors wrap each call in Connect's
 * order; `timeoutMs` becomes the gRPC deadline (so `grpc-timeout` goes downstream) and
 * a call that outlives it fails DEADLINE_EXCEEDED "the operation timed out"; an aborted
 * `signal` cancels the call (RST_STREAM) and rejects with the abort reason as a
 * ConnectError; a failed call's ConnectError carries the status code, message, the
 * google.rpc.Status details of `grpc-status-details-bin` and the trailers (then the
 * headers) as metadata. Streaming methods go to a connect-node gRPC transport created
 * on first use. No grpc-js retries: the mesh's sidecars retry. The one exception is a
 * response cut after it began (its stream reset or its connection dropped before the
 * status), which no proxy can retry: a method the proto marks NO_SIDE_EFFECTS or
 * IDEMPOTENT gets one more attempt, within the same deadline.
 */
export function createGrpcJsTransport(options: GrpcJsTransportOptions): GrpcJsTransport {
  const url = new URL(options.baseUrl);
  if (url.protocol !== "http:" && url.protocol !== "https:")
    throw new Error(`grpc-js transport: unsupported scheme in ${options.baseUrl}`);
  if (url.pathname !== "/" && url.pathname !== "")
    throw new Error(`grpc-js transport: a base URL path is not supported: ${options.baseUrl}`);
  const port = url.port !== "" ? url.port : url.protocol === "https:" ? "443" : "80";
  const credentials =
    url.protocol === "https:" ? grpc.credentials.createSsl() : grpc.credentials.createInsecure();
  const client = new grpc.Client(`${url.hostname}:${port}`, credentials, {
    "grpc.keepalive_time_ms": options.keepaliveMs ?? 30_000,
    // connect-node's default PING timeout.
    "grpc.keepalive_timeout_ms": options.keepaliveTimeoutMs ?? 15_000,
    "grpc.client_idle_timeout_ms": options.idleTimeoutMs ?? 5 * 60_000,
    "grpc.enable_retries": 0,
    // connect-node reads responses of any size; grpc-js would stop at 4 MiB.
    "grpc.max_receive_message_length": -1,
  });
  const interceptors = options.interceptors ?? [];
  const sites = new Map<DescMethodUnary, MethodSite>();
  let streaming: Transport | undefined;

  function siteOf(method: DescMethodUnary): MethodSite {
    let site = sites.get(method);
    if (site === undefined) {
      const input = method.input;
      const output = method.output;
      site = {
        path: `/${method.parent.typeName}/${method.name}`,
        url: createMethodUrl(options.baseUrl, method),
        serialize: (message) => {
          const bytes = toBinary(input, message as MessageShape<DescMessage>);
          return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        },
        deserialize: (bytes) => fromBinary(output, bytes),
      };
      sites.set(method, site);
    }
    return site;
  }

  return {
    unary<I extends DescMessage, O extends DescMessage>(
      method: DescMethodUnary<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: HeaderInit | undefined,
      input: MessageInitShape<I>,
      contextValues?: ContextValues,
    ): Promise<UnaryResponse<I, O>> {
      const site = siteOf(method as unknown as DescMethodUnary);
      const timeout =
        timeoutMs === undefined ? options.defaultTimeoutMs : timeoutMs <= 0 ? undefined : timeoutMs;
      const call = new UnaryCall(client, site, signal, timeout);
      let next = (req: UnaryRequest<I, O>) => call.run(req, method);
      for (let i = interceptors.length - 1; i >= 0; i--) {
        next = (interceptors[i] as Interceptor)(next as never) as unknown as typeof next;
      }
      const req = call.request(method, header, input, contextValues);
      let pending: Promise<UnaryResponse<I, O>>;
      try {
        pending = next(req);
      } catch (reason) {
        // An interceptor that throws before its first await: still a rejection, as from
        // Connect's transports (their unary() is async).
        return Promise.reject(call.fail(reason));
      }
      return pending.then(
        (res) => {
          call.done();
          return res;
        },
        (reason: unknown) => Promise.reject(call.fail(reason)),
      );
    },

    stream<I extends DescMessage, O extends DescMessage>(
      method: DescMethodStreaming<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: HeaderInit | undefined,
      input: AsyncIterable<MessageInitShape<I>>,
      contextValues?: ContextValues,
    ): Promise<StreamResponse<I, O>> {
      // No caller streams today; connect-node keeps them working without a second
      // implementation to maintain.
      streaming ??= createGrpcTransport({
        baseUrl: options.baseUrl,
        interceptors,
        ...(options.defaultTimeoutMs !== undefined
          ? { defaultTimeoutMs: options.defaultTimeoutMs }
          : {}),
        pingIntervalMs: options.keepaliveMs ?? 30_000,
        idleConnectionTimeoutMs: options.idleTimeoutMs ?? 5 * 60_000,
      });
      return streaming.stream(method, signal, timeoutMs, header, input, contextValues);
    },

    close() {
      client.close();
    },
  };
}

/**
 * One unary call's state. Connect's runUnaryCall links the caller's signal and a deadline
 * timer into a fresh AbortController per call, and aborts it (a DOMException) when the
 * call ends; that is a good part of its cost. Here `req.signal` is a getter that builds
 * that same linked signal only if an interceptor reads it (or spreads the request);
 * otherwise the call watches the caller's signal itself and leaves the deadline to grpc-js.
 */
class UnaryCall {
  private deadlineAt: number | undefined;
  private linked: AbortController | undefined;
  private deadlineSignal: AbortSignal | undefined;
  private cleanupDeadline: (() => void) | undefined;
  private original: object | undefined;

  constructor(
    private readonly client: grpc.Client,
    private readonly site: MethodSite,
    private readonly callerSignal: AbortSignal | undefined,
    timeoutMs: number | undefined,
  ) {
    if (timeoutMs !== undefined) this.deadlineAt = Date.now() + timeoutMs;
  }

  request<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    header: HeaderInit | undefined,
    input: MessageInitShape<I>,
    contextValues: ContextValues | undefined,
  ): UnaryRequest<I, O> {
    const call = this;
    const req: UnaryRequest<I, O> = {
      stream: false,
      service: method.parent,
      method,
      requestMethod: "POST",
      url: this.site.url,
      header: new Headers(header),
      contextValues: contextValues ?? createContextValues(),
      message: create(method.input, input),
      get signal() {
        return call.signal();
      },
    };
    this.original = req;
    return req;
  }

  /** The linked signal Connect would have put in `req.signal`, built on first read. */
  private signal(): AbortSignal {
    if (this.linked === undefined) {
      const { signal, cleanup } = createDeadlineSignal(
        this.deadlineAt === undefined ? undefined : Math.max(0, this.deadlineAt - Date.now()),
      );
      this.deadlineSignal = signal;
      this.cleanupDeadline = cleanup;
      this.linked = createLinkedAbortController(this.callerSignal, signal);
    }
    return this.linked.signal;
  }

  /** The call succeeded: release what the signal getter built, as Connect does. */
  done(): void {
    if (this.linked === undefined) return;
    this.cleanupDeadline?.();
    this.linked.abort();
  }

  /** Connect's error for a failed call: the deadline wins over whatever else happened. */
  fail(reason: unknown): ConnectError {
    let err: ConnectError;
    if (this.deadlineSignal?.aborted) {
      err = ConnectError.from(getAbortSignalReason(this.deadlineSignal));
    } else if (
      this.deadlineAt !== undefined &&
      Date.now() >= this.deadlineAt - DEADLINE_SLACK_MS &&
      (Date.now() >= this.deadlineAt ||
        (reason instanceof ConnectError && reason.code === Code.DeadlineExceeded))
    ) {
      err = new ConnectError("the operation timed out", Code.DeadlineExceeded);
    } else {
      err = ConnectError.from(reason);
    }
    if (this.linked !== undefined) {
      this.cleanupDeadline?.();
      this.linked.abort(err);
    }
    return err;
  }

  run<I extends DescMessage, O extends DescMessage>(
    req: UnaryRequest<I, O>,
    method: DescMethodUnary<I, O>,
  ): Promise<UnaryResponse<I, O>> {
    // An interceptor that replaced the request or read its signal gets Connect's
    // semantics: the call follows req.signal.
    const signal =
      req === this.original && this.linked === undefined ? this.callerSignal : req.signal;
    if (signal?.aborted) return Promise.reject(ConnectError.from(getAbortSignalReason(signal)));
    const metadata = new grpc.Metadata();
    req.header.forEach((value, key) => {
      if (reservedHeaders.has(key) || key.charCodeAt(0) === 58 /* ":" */) return;
      if (key.endsWith("-bin")) metadata.add(key, Buffer.from(value, "base64"));
      else metadata.add(key, value);
    });
    const callOptions: grpc.CallOptions =
      this.deadlineAt === undefined ? {} : { deadline: this.deadlineAt };
    const safe = retriesSafely(method);
    return new Promise<UnaryResponse<I, O>>((resolve, reject) => {
      let grpcCall: grpc.ClientUnaryCall;
      let attempts = 0;
      const onAbort = () => {
        reject(ConnectError.from(getAbortSignalReason(signal as AbortSignal)));
        grpcCall.cancel();
      };
      const attempt = () => {
        attempts += 1;
        let header: grpc.Metadata | undefined;
        let value: unknown;
        grpcCall = this.client.makeUnaryRequest(
          this.site.path,
          this.site.serialize,
          this.site.deserialize,
          req.message,
          attempts === 1 ? metadata : metadata.clone(),
          callOptions,
          (_err, response) => {
            // The status event follows synchronously, with the trailers; settle there.
            value = response;
          },
        );
        grpcCall.on("metadata", (m: grpc.Metadata) => {
          header = m;
        });
        grpcCall.on("status", (status: grpc.StatusObject) => {
          if (
            safe &&
            attempts < MAX_ATTEMPTS_AFTER_CUT &&
            header !== undefined &&
            cutBeforeStatus(status) &&
            signal?.aborted !== true &&
            (this.deadlineAt === undefined || Date.now() < this.deadlineAt)
          ) {
            attempt();
            return;
          }
          signal?.removeEventListener("abort", onAbort);
          const headers = header === undefined ? new Headers() : metadataToHeaders(header);
          if (status.code === grpc.status.OK && value !== undefined) {
            resolve({
              stream: false,
              service: method.parent,
              method,
              header: headers,
              message: value as MessageShape<O>,
              trailer: metadataToHeaders(status.metadata),
            });
            return;
          }
          reject(errorFromStatus(status, headers));
        });
      };
      attempt();
      signal?.addEventListener("abort", onAbort);
    });
  }
}

// A response that began and then broke off is the one failure no proxy can retry: Envoy
// retries only until it has forwarded the response's headers, and a replica killed
// mid-response (kill -9, OOM) leaves its callers exactly that. One more attempt, for
// methods whose proto says a repeat is harmless.
const MAX_ATTEMPTS_AFTER_CUT = 2;

function retriesSafely(method: DescMethodUnary): boolean {
  return (
    method.idempotency === MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS ||
    method.idempotency === MethodOptions_IdempotencyLevel.IDEMPOTENT
  );
}

/**
 * The call ended without a gRPC status from the server: its stream was reset (a proxy
 * whose upstream died sends RST_STREAM) or its connection dropped. grpc-js reports these
 * with its own details and no trailers; a server's own INTERNAL or UNAVAILABLE comes with
 * trailers or with other details.
 */
function cutBeforeStatus(status: grpc.StatusObject): boolean {
  return (
    (status.code === grpc.status.INTERNAL || status.code === grpc.status.UNAVAILABLE) &&
    Object.keys(status.metadata.getMap()).length === 0 &&
    (status.details.startsWith("Received RST_STREAM") || status.details === "Connection dropped")
  );
}

/**
 * The ConnectError connect-node builds from the same response: the details come from
 * `grpc-status-details-bin` (a google.rpc.Status, decoded by Connect itself), and the
 * error's metadata is the trailers followed by the headers.
 */
function errorFromStatus(status: grpc.StatusObject, header: Headers): ConnectError {
  const trailer = new Headers();
  const entries = status.metadata.toJSON();
  for (const key in entries) {
    for (const value of entries[key] ?? []) {
      trailer.append(key, typeof value === "string" ? value : value.toString("base64"));
    }
  }
  // grpc-js lifts these two out of the trailers; Connect leaves them in.
  trailer.set("grpc-status", String(status.code));
  trailer.set("grpc-message", encodeURIComponent(status.details));
  const err =
    findTrailerError(trailer) ??
    // An OK status without a message (Connect's protocol error), or a details trailer
    // claiming OK on a failed call (then grpc-js's status stands).
    (status.code === grpc.status.OK
      ? new ConnectError(
          "protocol error: missing output message for unary method",
          Code.Unimplemented,
          trailer,
        )
      : new ConnectError(status.details, status.code as number as Code, trailer));
  header.forEach((value, key) => {
    err.metadata.append(key, value);
  });
  return err;
}
