import type { DescMessage, DescMethod, DescService, MessageShape } from "@bufbuild/protobuf";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ContextKey,
  type ContextValues,
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
  /**
   * Applied once per method when the services are added, not once per call as Connect's
   * own handlers do (that was a closure per interceptor per call). An interceptor's outer
   * function, `(next) => …`, must therefore keep no per-call state; the kit's keep none.
   */
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
  for (const { desc, impl } of registrations) {
    const spec = createServiceImplSpec(desc, impl);
    const definition: Record<string, grpc.MethodDefinition<Buffer, Uint8Array>> = {};
    const handlers: grpc.UntypedServiceImplementation = {};
    for (const method of desc.methods) {
      const methodSpec = spec.methods[method.localName];
      if (methodSpec === undefined) continue;
      definition[method.localName] = methodDefinition(method);
      const site: MethodSite = {
        method,
        service: method.parent,
        url: `/${method.parent.typeName}/${method.name}`,
        maxDeadlineMs: options.maxDeadlineMs,
        live,
      };
      switch (methodSpec.kind) {
        case "unary": {
          const chain = unaryChain(methodSpec.impl, method, options.interceptors);
          handlers[method.localName] = (
            call: grpc.ServerUnaryCall<Buffer, Uint8Array>,
            callback: grpc.sendUnaryData<Uint8Array>,
          ) => {
            void serveUnary(site, chain, call, callback);
          };
          break;
        }
        case "server_streaming":
          handlers[method.localName] = (call: grpc.ServerWritableStream<Buffer, Uint8Array>) => {
            void serveStream(site, call, undefined, async (ctx) => {
              const run = transformInvokeImplementation(methodSpec, ctx, options.interceptors);
              const input = decode(method.input, call.request);
              await writeAll(call, ctx, run(single(input)), method.output);
            });
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
            void serveStream(site, call, callback, async (ctx) => {
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
            });
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

/** What every call of one method shares. */
interface MethodSite {
  method: DescMethod;
  service: DescService;
  url: string;
  maxDeadlineMs: number;
  /** The server's calls in flight, aborted together when the shutdown grace runs out. */
  live: Set<CallContext>;
}

type UnaryFn = (req: UnaryRequest) => Promise<UnaryResponse>;

/** Where the adapter keeps a call's context on the objects it hands out. */
const CALL: unique symbol = Symbol("meshmart call");

/**
 * The implementation wrapped in the interceptors, built once per method: the innermost
 * function finds the call's context on the request (or its context values, should an
 * interceptor pass on a request it built itself), so nothing in the chain is per call.
 * Same request and response shapes and chain order as Connect's handlers, without
 * Connect's per-call context machinery, which measured at over 20 µs a call: most of a
 * small RPC's budget on grpc-js.
 */
function unaryChain(
  // biome-ignore lint/suspicious/noExplicitAny: one implementation of any unary method
  impl: (request: any, context: HandlerContext) => unknown,
  method: DescMethod,
  interceptors: readonly Interceptor[],
): UnaryFn {
  let next: UnaryFn = async (req) => {
    const ctx = callOf(req);
    const handlerCtx =
      req.header === ctx.requestHeader && req.contextValues === ctx.values
        ? ctx
        : (Object.assign(Object.create(ctx), {
            requestHeader: req.header,
            values: req.contextValues,
          }) as CallContext);
    const result = await impl(req.message, handlerCtx);
    return new HandlerResponse(
      ctx,
      create(method.output, result as never),
    ) as unknown as UnaryResponse;
  };
  for (let i = interceptors.length - 1; i >= 0; i--) {
    next = (interceptors[i] as Interceptor)(next as never) as UnaryFn;
  }
  return next;
}

function callOf(req: UnaryRequest): CallContext {
  const ctx =
    (req as Partial<CallRequest>)[CALL] ?? (req.contextValues as Partial<CallValues>)[CALL];
  if (ctx === undefined) {
    throw new ConnectError("an interceptor dropped the call's context", Code.Internal);
  }
  return ctx;
}

/**
 * One unary call, start to answer, in a single async function: no per-call closures
 * for the steps, the timer or the cancel listener.
 */
async function serveUnary(
  site: MethodSite,
  chain: UnaryFn,
  call: grpc.ServerUnaryCall<Buffer, Uint8Array>,
  callback: grpc.sendUnaryData<Uint8Array>,
): Promise<void> {
  const ctx = startCall(site, call, callback);
  try {
    const req = new CallRequest(ctx, decode(site.method.input, call.request));
    const res = await chain(req as unknown as UnaryRequest);
    // An interceptor may answer with headers of its own; the adapter sends the context's.
    if (!(res instanceof HandlerResponse && res[CALL] === ctx))
      adoptHeaders(ctx, res as UnaryResponse);
    if (!ctx.claimAnswer()) return;
    sendHeaders(call, ctx.pendingHeader());
    callback(null, toBinary(site.method.output, res.message), trailersOf(ctx));
  } catch (reason) {
    if (ctx.claimAnswer()) callback(errorToStatus(ConnectError.from(reason), ctx.responseTrailer));
  } finally {
    endCall(ctx);
  }
}

function adoptHeaders(ctx: CallContext, res: UnaryResponse): void {
  // A copy of our response made with a spread has no header getters: nothing to adopt.
  const header = res.header as Headers | undefined;
  const trailer = res.trailer as Headers | undefined;
  if (header !== undefined && header !== ctx.responseHeader) {
    for (const [k, v] of header) ctx.responseHeader.set(k, v);
  }
  if (trailer !== undefined && trailer !== ctx.responseTrailer) {
    for (const [k, v] of trailer) ctx.responseTrailer.set(k, v);
  }
}

/** A streaming call: Connect's own invocation code runs the interceptors per call. */
async function serveStream(
  site: MethodSite,
  call: AnyCall,
  callback: grpc.sendUnaryData<Uint8Array> | undefined,
  run: (ctx: CallContext) => Promise<void>,
): Promise<void> {
  const ctx = startCall(site, call, callback);
  try {
    await run(ctx);
  } catch (reason) {
    if (ctx.claimAnswer()) fail(ctx, errorToStatus(ConnectError.from(reason), ctx.responseTrailer));
  } finally {
    endCall(ctx);
  }
}

/**
 * The call's context, registered as live, with its deadline: the caller's, capped by the
 * server's maximum. The adapter enforces it itself, one timer that answers
 * DEADLINE_EXCEEDED and aborts the handler's signal, instead of a promise race per call in
 * the deadline interceptor.
 */
function startCall(
  site: MethodSite,
  call: AnyCall,
  callback: grpc.sendUnaryData<Uint8Array> | undefined,
): CallContext {
  const ctx = new CallContext(site, metadataToHeaders(call.metadata), call, callback);
  site.live.add(ctx);
  (call as CallWithContext)[CALL] = ctx;
  // One listener function for every call; it finds the context on the call (`this`).
  (call as NodeJS.EventEmitter).on("cancelled", onCancelled);
  const now = Date.now();
  const deadline = call.getDeadline();
  const callerMs = deadline instanceof Date ? deadline.getTime() : deadline;
  const effective = Math.min(callerMs, now + site.maxDeadlineMs);
  ctx.deadline = effective;
  ctx.values.set(deadlineKey, effective);
  ctx.values.set(deadlineEnforcedKey, true);
  ctx.timer = setTimeout(onDeadline, effective - now, ctx);
  return ctx;
}

function endCall(ctx: CallContext): void {
  ctx.finished = true;
  clearTimeout(ctx.timer);
  ctx.site.live.delete(ctx);
  // Work the handler started may still watch the signal; the call is over.
  ctx.abort(CALL_DONE);
}

type CallWithContext = AnyCall & { [CALL]?: CallContext };

function onCancelled(this: CallWithContext): void {
  // grpc-js also emits "cancelled" when a finished call's stream closes normally;
  // only a cancel before we answered means the client hung up.
  const ctx = this[CALL];
  if (ctx !== undefined && !ctx.finished) ctx.abort(CLIENT_CANCELLED);
}

function onDeadline(ctx: CallContext): void {
  ctx.abort(DEADLINE_EXCEEDED);
  if (ctx.claimAnswer()) fail(ctx, errorToStatus(DEADLINE_EXCEEDED, ctx.responseTrailer));
}

/** Answers the call with an error status: through the unary callback, or the stream. */
function fail(ctx: CallContext, status: grpc.ServerErrorResponse): void {
  if (ctx.callback !== undefined) ctx.callback(status);
  else ctx.call.emit("error", status);
}

/**
 * ctx.values: Connect's ContextValues semantics, with the methods on a prototype instead
 * of three closures per call (what createContextValues makes).
 */
class CallValues implements ContextValues {
  [CALL]: CallContext;

  constructor(ctx: CallContext) {
    this[CALL] = ctx;
  }

  get<T>(key: ContextKey<T>): T {
    const self = this as unknown as Record<symbol, T>;
    return key.id in self ? (self[key.id] as T) : key.defaultValue;
  }

  set<T>(key: ContextKey<T>, value: T): this {
    (this as unknown as Record<symbol, T>)[key.id] = value;
    return this;
  }

  delete(key: ContextKey<unknown>): this {
    delete (this as unknown as Record<symbol, unknown>)[key.id];
    return this;
  }
}

/** The request the interceptor chain sees, as Connect's handlers build it. */
class CallRequest {
  readonly stream = false;
  readonly service: DescService;
  readonly method: DescMethod;
  readonly requestMethod = "POST";
  readonly url: string;
  readonly header: Headers;
  readonly contextValues: ContextValues;
  readonly [CALL]: CallContext;

  constructor(
    ctx: CallContext,
    readonly message: unknown,
  ) {
    this.service = ctx.service;
    this.method = ctx.method;
    this.url = ctx.url;
    this.header = ctx.requestHeader;
    this.contextValues = ctx.values;
    this[CALL] = ctx;
  }

  // Lazy like the context's: reading it is what creates the AbortController.
  get signal(): AbortSignal {
    return this[CALL].signal;
  }
}

/** The implementation's answer as the chain sees it; its headers are the context's. */
class HandlerResponse {
  readonly stream = false;
  readonly service: DescService;
  readonly method: DescMethod;
  readonly [CALL]: CallContext;

  constructor(
    ctx: CallContext,
    readonly message: MessageShape<DescMessage>,
  ) {
    this.service = ctx.service;
    this.method = ctx.method;
    this[CALL] = ctx;
  }

  get header(): Headers {
    return this[CALL].responseHeader;
  }

  get trailer(): Headers {
    return this[CALL].responseTrailer;
  }
}

/** Milliseconds to the call's deadline; one function for every context (`this` is the context). */
function timeoutMsOf(this: { deadline: number }): number {
  return this.deadline - Date.now();
}

/**
 * A call's handler context. The AbortSignal is created only when someone asks for it
 * (most unary handlers never do), and the adapter aborts it itself when the call ends,
 * is cancelled or passes its deadline. Everything is a plain field (no closures per call);
 * Connect's streaming code copies a context with Object.assign, which keeps own fields.
 */
class CallContext implements HandlerContext {
  readonly protocolName = "grpc";
  readonly requestMethod = "POST";
  readonly method: DescMethod;
  readonly service: DescService;
  readonly url: string;
  readonly values: CallValues;
  readonly timeoutMs: () => number = timeoutMsOf;
  /** Absolute deadline, epoch ms. */
  deadline = Number.POSITIVE_INFINITY;
  timer: NodeJS.Timeout | undefined;
  /** Set once the adapter is done with the call (answered, failed or timed out). */
  finished = false;
  // Response metadata is rare on success; Headers are created when first touched.
  private header: Headers | undefined;
  private trailer: Headers | undefined;
  private controller: AbortController | undefined;
  private abortedWith: unknown;
  private answered = false;

  constructor(
    readonly site: MethodSite,
    readonly requestHeader: Headers,
    readonly call: AnyCall,
    readonly callback: grpc.sendUnaryData<Uint8Array> | undefined,
  ) {
    this.method = site.method;
    this.service = site.service;
    this.url = site.url;
    this.values = new CallValues(this);
  }

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
  ctx: CallContext,
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
  return new MetadataHeaders(metadata) as unknown as Headers;
}

type HeadersIterator = ReturnType<Headers["entries"]>;

/** Headers' methods as methods: undici-types declares them as properties, which a subclass may not override. */
interface HeadersMethods {
  get(name: string): string | null;
  has(name: string): boolean;
  append(name: string, value: string): void;
  set(name: string, value: string): void;
  delete(name: string): void;
  getSetCookie(): string[];
  forEach(callback: (value: string, key: string, parent: Headers) => void, thisArg?: unknown): void;
  entries(): HeadersIterator;
  keys(): ReturnType<Headers["keys"]>;
  values(): ReturnType<Headers["values"]>;
  [Symbol.iterator](): HeadersIterator;
}
const HeadersBase = Headers as unknown as new () => HeadersMethods;

/**
 * Request metadata as Fetch-API Headers. The interceptors read a few headers on every
 * call, and undici validates and converts every name and value it is given or asked
 * for (a few µs a call); so the values stay in a plain map that answers get() and has()
 * until something writes or iterates the headers, which first copies them into the real
 * Headers this is. Only the first value of a repeated key is kept, as before.
 */
export class MetadataHeaders extends HeadersBase {
  #pending: Map<string, string> | undefined;

  constructor(metadata: grpc.Metadata) {
    super();
    const pending = new Map<string, string>();
    const map = metadata.getMap();
    for (const key in map) {
      const value = map[key] as string | Buffer;
      pending.set(key, typeof value === "string" ? value : Buffer.from(value).toString("base64"));
    }
    this.#pending = pending;
  }

  /** Moves the pending values into the Headers proper; after this the class adds nothing. */
  #own(): void {
    const pending = this.#pending;
    if (pending === undefined) return;
    this.#pending = undefined;
    for (const [key, value] of pending) super.append(key, value);
  }

  override get(name: string): string | null {
    const pending = this.#pending;
    if (pending === undefined) return super.get(name);
    return pending.get(name.toLowerCase()) ?? null;
  }

  override has(name: string): boolean {
    const pending = this.#pending;
    if (pending === undefined) return super.has(name);
    return pending.has(name.toLowerCase());
  }

  override append(name: string, value: string): void {
    this.#own();
    super.append(name, value);
  }

  override set(name: string, value: string): void {
    this.#own();
    super.set(name, value);
  }

  override delete(name: string): void {
    this.#own();
    super.delete(name);
  }

  override getSetCookie(): string[] {
    this.#own();
    return super.getSetCookie();
  }

  override forEach(
    callback: (value: string, key: string, parent: Headers) => void,
    thisArg?: unknown,
  ): void {
    this.#own();
    super.forEach(callback, thisArg);
  }

  override entries(): HeadersIterator {
    this.#own();
    return super.entries();
  }

  override keys(): ReturnType<Headers["keys"]> {
    this.#own();
    return super.keys();
  }

  override values(): ReturnType<Headers["values"]> {
    this.#own();
    return super.values();
  }

  override [Symbol.iterator](): HeadersIterator {
    this.#own();
    return super[Symbol.iterator]();
  }
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
