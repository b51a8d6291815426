import type { DescMessage, DescMethod, DescService } from "@bufbuild/protobuf";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createContextValues,
  createServiceImplSpec,
  type HandlerContext,
  type Interceptor,
  type ServiceImpl,
  type UnaryRequest,
  type UnaryResponse,
} from "@connectrpc/connect";
import { transformInvokeImplementation } from "@connectrpc/connect/protocol";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import * as grpc from "@grpc/grpc-js";
import { deadlineEnforcedKey, deadlineKey } from "../context.js";

/** A service descriptor with the Connect implementation that serves it. */
export interface ServiceRegistration {
  desc: DescService;
  // biome-ignore lint/suspicious/noExplicitAny: the registry holds implementations of many services
  impl: Partial<ServiceImpl<any>>;
}

/** Options for {@link addServicesToGrpcServer}. */
export interface GrpcAdapterOptions {
  interceptors: Interceptor[];
  /** Aborted when the process starts shutting down; handlers see it through ctx.signal. */
  shutdownSignal: AbortSignal;
  maxMessageBytes: number;
  /** Deadline for calls that bring none, and the cap on those that do. */
  maxDeadlineMs: number;
}

/**
 * Serves Connect `ServiceImpl`s on a @grpc/grpc-js server. grpc-js does the HTTP/2 and
 * gRPC framing (several times faster than connect-node's gRPC path); each call then runs
 * through Connect's own invocation code with the same interceptors the Connect port uses,
 * so validation, auth, errors and metrics cannot differ between the ports.
 * Messages stay opaque Buffers until the handler runs, so a malformed body becomes
 * INVALID_ARGUMENT instead of grpc-js's generic deserialization failure.
 */
export function addServicesToGrpcServer(
  server: grpc.Server,
  registrations: readonly ServiceRegistration[],
  options: GrpcAdapterOptions,
): void {
  for (const { desc, impl } of registrations) {
    const spec = createServiceImplSpec(desc, impl);
    const definition: Record<string, grpc.MethodDefinition<Buffer, Uint8Array>> = {};
    const handlers: grpc.UntypedServiceImplementation = {};
    for (const method of desc.methods) {
      const methodSpec = spec.methods[method.localName];
      if (methodSpec === undefined) continue;
      definition[method.localName] = methodDefinition(method);
      const invoke = createInvoker(method, options);
      switch (methodSpec.kind) {
        case "unary":
          handlers[method.localName] = (
            call: grpc.ServerUnaryCall<Buffer, Uint8Array>,
            callback: grpc.sendUnaryData<Uint8Array>,
          ) => {
            invoke(
              call,
              async (ctx, input) => {
                const out = await invokeUnary(
                  methodSpec.impl,
                  ctx,
                  decode(method.input, input),
                  options.interceptors,
                );
                if (!ctx.claimAnswer()) return;
                sendHeaders(call, ctx.pendingHeader());
                callback(null, toBinary(method.output, out), trailersOf(ctx));
              },
              (status) => callback(status),
            );
          };
          break;
        case "server_streaming":
          handlers[method.localName] = (call: grpc.ServerWritableStream<Buffer, Uint8Array>) => {
            invoke(
              call,
              async (ctx, input) => {
                const run = transformInvokeImplementation(methodSpec, ctx, options.interceptors);
                await writeAll(call, ctx, run(single(decode(method.input, input))), method.output);
              },
              (status) => call.emit("error", status),
            );
          };
          break;
        case "client_streaming":
        case "bidi_streaming":
          handlers[method.localName] = (
            call:
              | grpc.ServerDuplexStream<Buffer, Uint8Array>
              | grpc.ServerReadableStream<Buffer, Uint8Array>,
            callback?: grpc.sendUnaryData<Uint8Array>,
          ) => {
            const fail = (status: grpc.ServerErrorResponse) =>
              callback === undefined ? call.emit("error", status) : callback(status);
            invoke(
              call,
              async (ctx) => {
                const run = transformInvokeImplementation(methodSpec, ctx, options.interceptors);
                const output = run(decodeStream(call, method.input));
                if (callback !== undefined) {
                  let last: Uint8Array | undefined;
                  for await (const m of output) last = toBinary(method.output, m);
                  sendHeaders(call, ctx.pendingHeader());
                  callback(null, last, trailersOf(ctx));
                } else {
                  await writeAll(
                    call as grpc.ServerDuplexStream<Buffer, Uint8Array>,
                    ctx,
                    output,
                    method.output,
                  );
                }
              },
              fail,
            );
          };
          break;
      }
    }
    server.addService(definition as grpc.ServiceDefinition, handlers);
  }
}

type AnyCall =
  | grpc.ServerUnaryCall<Buffer, Uint8Array>
  | grpc.ServerWritableStream<Buffer, Uint8Array>
  | grpc.ServerReadableStream<Buffer, Uint8Array>
  | grpc.ServerDuplexStream<Buffer, Uint8Array>;
/**
 * Runs a unary call through the interceptors and the implementation the way Connect's
 * handlers do (same request and response shapes, same chain order), without Connect's
 * per-call context machinery, which measured at over 20 µs a call: most of a small
 * RPC's budget on grpc-js.
 */
async function invokeUnary(
  // biome-ignore lint/suspicious/noExplicitAny: one implementation of any unary method
  impl: (request: any, context: HandlerContext) => unknown,
  ctx: Ctx,
  message: unknown,
  interceptors: Interceptor[],
) {
  const method = ctx.method;
  let own: UnaryResponse | undefined;
  let next = async (req: UnaryRequest): Promise<UnaryResponse> => {
    const handlerCtx =
      req.header === ctx.requestHeader && req.contextValues === ctx.values
        ? ctx
        : (Object.assign(Object.create(ctx), {
            requestHeader: req.header,
            values: req.contextValues,
          }) as Ctx);
    const result = await impl(req.message, handlerCtx);
    own = {
      stream: false,
      service: ctx.service,
      method,
      get header() {
        return ctx.responseHeader;
      },
      get trailer() {
        return ctx.responseTrailer;
      },
      message: create(method.output, result as never),
    } as UnaryResponse;
    return own;
  };
  for (let i = interceptors.length - 1; i >= 0; i--) {
    next = (interceptors[i] as Interceptor)(next as never) as typeof next;
  }
  const res = await next({
    stream: false,
    service: ctx.service,
    method,
    requestMethod: ctx.requestMethod,
    url: ctx.url,
    // Lazy like the context's: reading it is what creates the AbortController.
    get signal() {
      return ctx.signal;
    },
    header: ctx.requestHeader,
    contextValues: ctx.values,
    message,
  } as UnaryRequest);
  // An interceptor may answer with headers of its own; the adapter sends the context's.
  if (res !== own) {
    if (res.header !== ctx.responseHeader) {
      for (const [k, v] of res.header) ctx.responseHeader.set(k, v);
    }
    if (res.trailer !== ctx.responseTrailer) {
      for (const [k, v] of res.trailer) ctx.responseTrailer.set(k, v);
    }
  }
  return res.message;
}

/**
 * A call's handler context. The AbortSignal is created only when someone asks for it
 * (most unary handlers never do), and the adapter aborts it itself when the call ends,
 * is cancelled or passes its deadline.
 */
class CallContext implements HandlerContext {
  readonly protocolName = "grpc";
  readonly requestMethod = "POST";
  // Response metadata is rare on success; Headers are created when first touched.
  private header: Headers | undefined;
  private trailer: Headers | undefined;
  readonly values = createContextValues();
  timeoutMs: () => number | undefined = noTimeout;
  private controller: AbortController | undefined;
  private abortedWith: unknown;
  private answered = false;

  constructor(
    readonly method: DescMethod,
    readonly url: string,
    readonly requestHeader: Headers,
  ) {}

  get responseHeader(): Headers {
    this.header ??= new Headers();
    return this.header;
  }

  get responseTrailer(): Headers {
    this.trailer ??= new Headers();
    return this.trailer;
  }

  /** Response headers to send, if anything set one. */
  pendingHeader(): Headers | undefined {
    return this.header;
  }

  /** Trailers to send, if anything set one. */
  pendingTrailer(): Headers | undefined {
    return this.trailer;
  }

  get service(): DescService {
    return this.method.parent;
  }

  get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController();
      if (this.abortedWith !== undefined) this.controller.abort(this.abortedWith);
    }
    return this.controller.signal;
  }

  /** True for the first caller only: the call is answered exactly once (result, error or deadline). */
  claimAnswer(): boolean {
    if (this.answered) return false;
    this.answered = true;
    return true;
  }

  abort(reason: unknown): void {
    if (this.abortedWith !== undefined) return;
    this.abortedWith = reason;
    this.controller?.abort(reason);
  }
}

type Ctx = CallContext;

function createInvoker(method: DescMethod, options: GrpcAdapterOptions) {
  const url = `/${method.parent.typeName}/${method.name}`;
  // One listener for all calls instead of one per call: at grace expiry every live
  // call is aborted at once.
  const live = new Set<CallContext>();
  options.shutdownSignal.addEventListener(
    "abort",
    () => {
      for (const c of live) c.abort(SERVER_SHUTDOWN);
    },
    { once: true },
  );
  return (
    call: AnyCall,
    run: (ctx: Ctx, input: Buffer) => Promise<void>,
    fail: (status: grpc.ServerErrorResponse) => void,
  ): void => {
    const ctx = new CallContext(method, url, metadataToHeaders(call.metadata));
    live.add(ctx);
    let finished = false;
    // grpc-js also emits "cancelled" when a finished call's stream closes normally;
    // only a cancel before we answered means the client hung up.
    (call as NodeJS.EventEmitter).once("cancelled", () => {
      if (!finished) ctx.abort(CLIENT_CANCELLED);
    });
    // The adapter enforces the deadline itself (the caller's, capped by the server's
    // maximum): one timer that answers DEADLINE_EXCEEDED and aborts the handler's signal,
    // instead of a promise race per call in the deadline interceptor.
    const now = Date.now();
    const deadline = call.getDeadline();
    const callerMs = deadline instanceof Date ? deadline.getTime() : deadline;
    const effective = Math.min(callerMs, now + options.maxDeadlineMs);
    ctx.values.set(deadlineKey, effective);
    ctx.values.set(deadlineEnforcedKey, true);
    ctx.timeoutMs = () => effective - Date.now();
    const timer = setTimeout(() => {
      ctx.abort(DEADLINE_EXCEEDED);
      if (ctx.claimAnswer()) fail(errorToStatus(DEADLINE_EXCEEDED, ctx.responseTrailer));
    }, effective - now);
    const input = "request" in call ? (call.request as Buffer) : EMPTY;
    run(ctx, input)
      .catch((reason: unknown) => {
        if (ctx.claimAnswer()) fail(errorToStatus(ConnectError.from(reason), ctx.responseTrailer));
      })
      .finally(() => {
        finished = true;
        clearTimeout(timer);
        live.delete(ctx);
        // Work the handler started may still watch the signal; the call is over.
        ctx.abort(CALL_DONE);
      });
  };
}

const noTimeout = () => undefined;
const EMPTY = Buffer.alloc(0);
// Shared abort reasons: an Error per call (with its stack) costs more than the call.
const CLIENT_CANCELLED = new ConnectError("call cancelled by the client", Code.Canceled);
const CALL_DONE = new ConnectError("call finished", Code.Canceled);
const DEADLINE_EXCEEDED = new ConnectError("deadline exceeded", Code.DeadlineExceeded);
const SERVER_SHUTDOWN = new ConnectError("server shutting down", Code.Unavailable);

function methodDefinition(method: DescMethod): grpc.MethodDefinition<Buffer, Uint8Array> {
  return {
    path: `/${method.parent.typeName}/${method.name}`,
    requestStream:
      method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
    responseStream:
      method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
    originalName: method.localName,
    // Identity codecs: decoding happens in the handler so its failure has a proper code.
    requestSerialize: (value: Buffer) => value,
    requestDeserialize: (bytes: Buffer) => bytes,
    responseSerialize: (value: Uint8Array) =>
      Buffer.from(value.buffer, value.byteOffset, value.byteLength),
    responseDeserialize: (bytes: Buffer) => bytes,
  };
}

function decode<T extends DescMessage>(schema: T, bytes: Uint8Array) {
  try {
    return fromBinary(schema, bytes);
  } catch (reason) {
    throw new ConnectError(
      `request is not a valid ${schema.typeName}: ${reason instanceof Error ? reason.message : String(reason)}`,
      Code.InvalidArgument,
    );
  }
}

async function* single<T>(value: T): AsyncIterable<T> {
  yield value;
}

async function* decodeStream<T extends DescMessage>(call: AsyncIterable<unknown>, schema: T) {
  for await (const chunk of call) yield decode(schema, chunk as Buffer);
}

async function writeAll<T extends DescMessage>(
  call:
    | grpc.ServerWritableStream<unknown, Uint8Array>
    | grpc.ServerDuplexStream<unknown, Uint8Array>,
  ctx: Ctx,
  output: AsyncIterable<unknown>,
  schema: T,
): Promise<void> {
  let headersSent = false;
  for await (const message of output) {
    if (!headersSent) {
      sendHeaders(call, ctx.pendingHeader());
      headersSent = true;
    }
    if (ctx.signal.aborted) break;
    // Respect HTTP/2 flow control: a slow reader must not make us buffer without bound.
    if (!call.write(toBinary(schema, message as never))) {
      await new Promise<void>((resolve) => call.once("drain", resolve));
    }
  }
  if (!ctx.claimAnswer()) return;
  if (!headersSent) sendHeaders(call, ctx.pendingHeader());
  call.end(trailersOf(ctx));
}

function sendHeaders(
  call: { sendMetadata(m: grpc.Metadata): void },
  headers: Headers | undefined,
): void {
  if (headers === undefined) return;
  for (const _ of headers.keys()) {
    call.sendMetadata(headersToMetadata(headers));
    return;
  }
}

function trailersOf(ctx: CallContext): grpc.Metadata | undefined {
  const trailer = ctx.pendingTrailer();
  return trailer === undefined ? undefined : headersToMetadata(trailer);
}

/** gRPC metadata as Fetch-API Headers, the shape Connect handlers and interceptors read. */
export function metadataToHeaders(metadata: grpc.Metadata): Headers {
  const headers = new Headers();
  for (const [key, value] of Object.entries(metadata.getMap())) {
    headers.append(key, typeof value === "string" ? value : Buffer.from(value).toString("base64"));
  }
  return headers;
}

/** Fetch-API Headers as gRPC metadata; `-bin` values are base64 in Headers and bytes on the wire. */
export function headersToMetadata(headers: Headers): grpc.Metadata {
  const metadata = new grpc.Metadata();
  headers.forEach((value, key) => {
    if (key === "grpc-status" || key === "grpc-message") return;
    if (key.endsWith("-bin")) metadata.add(key, Buffer.from(value, "base64"));
    else metadata.add(key, value);
  });
  return metadata;
}

/** The gRPC status a ConnectError maps to, with google.rpc.Status details in `grpc-status-details-bin`. */
export function errorToStatus(err: ConnectError, trailer: Headers): grpc.ServerErrorResponse {
  const trailers = setTrailerStatus(new Headers(trailer), err);
  return Object.assign(new Error(err.rawMessage), {
    code: err.code as number as grpc.status,
    details: err.rawMessage,
    metadata: headersToMetadata(trailers),
  });
}
