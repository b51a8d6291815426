import type { DescService } from "@bufbuild/protobuf";
import {
  type CallOptions,
  type Client,
  ConnectError,
  createClient,
  type HandlerContext,
  type Interceptor,
} from "@connectrpc/connect";
import {
  context,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";
import { callerKey, remainingMs, requestIdKey, spanKey } from "./context.js";
import { createGrpcJsTransport } from "./grpc-js-transport.js";
import { codeName } from "./interceptors/observe.js";
import type { RpcMetrics } from "./observability/rpc-metrics.js";
import { headersGetter, headersSetter } from "./observability/tracing.js";

/** Options for {@link createServiceClient}. */
export interface ServiceClientOptions {
  /** This service's name, for client-side metrics. */
  service: string;
  metrics?: RpcMetrics;
  interceptors?: Interceptor[];
}

/**
 * A typed client for another service's gRPC port (`http://host:port`), over one
 * @grpc/grpc-js HTTP/2 channel ({@link createGrpcJsTransport}: PING every 30 s while calls
 * are open, connection dropped after 5 idle minutes, no client-side retries since the
 * mesh's sidecars retry, save one for a side-effect-free call whose response was cut
 * after it began). Each call gets a CLIENT span whose context travels in
 * `traceparent`, and client-side RED metrics. Pass {@link outgoing}(ctx) as call options inside a handler so the
 * deadline, cancellation, caller token and request id follow the call downstream.
 */
export function createServiceClient<T extends DescService>(
  desc: T,
  baseUrl: string,
  options: ServiceClientOptions,
): Client<T> {
  const transport = createGrpcJsTransport({
    baseUrl,
    interceptors: [createClientObserver(options), ...(options.interceptors ?? [])],
    keepaliveMs: 30_000,
    idleTimeoutMs: 5 * 60_000,
  });
  return createClient(desc, transport);
}

function createClientObserver(options: ServiceClientOptions): Interceptor {
  const tracer = trace.getTracer("meshmart-kit");
  return (next) => async (req) => {
    // The parent is the active span when spans are exported, else the trace outgoing(ctx)
    // already wrote into the headers.
    const parent = propagation.extract(context.active(), req.header, headersGetter);
    const span = tracer.startSpan(
      `${req.service.typeName}/${req.method.name}`,
      {
        kind: SpanKind.CLIENT,
        attributes: {
          "rpc.system": "grpc",
          "rpc.service": req.service.typeName,
          "rpc.method": req.method.name,
        },
      },
      parent,
    );
    const started = performance.now();
    const observe = (code: string) =>
      options.metrics?.observe(
        req.service.typeName,
        req.method.name,
        code,
        (performance.now() - started) / 1000,
        "client",
      );
    propagation.inject(trace.setSpan(parent, span), req.header, headersSetter);
    try {
      const res = await next(req);
      observe("ok");
      span.setAttribute("rpc.grpc.status_code", 0);
      span.end();
      return res;
    } catch (reason) {
      const err = ConnectError.from(reason);
      observe(codeName(err.code));
      // Connect's codes are gRPC's numbers.
      span.setAttribute("rpc.grpc.status_code", err.code);
      span.setStatus({ code: SpanStatusCode.ERROR, message: err.rawMessage });
      span.end();
      throw reason;
    }
  };
}

/**
 * Call options that carry the current RPC into an outgoing one: the remaining deadline
 * (so a downstream call never outlives its caller), the abort signal (the caller hung
 * up), the trace, the caller's verified token and the request id.
 */
export function outgoing(ctx: HandlerContext): CallOptions {
  const headers = new Headers();
  const requestId = ctx.values.get(requestIdKey);
  if (requestId !== "") headers.set("x-request-id", requestId);
  const span = ctx.values.get(spanKey);
  if (span !== undefined)
    propagation.inject(trace.setSpan(ROOT_CONTEXT, span), headers, headersSetter);
  const caller = ctx.values.get(callerKey);
  if (caller !== undefined) headers.set("authorization", `Bearer ${caller.token}`);
  const budget = remainingMs(ctx);
  return {
    signal: ctx.signal,
    headers,
    ...(Number.isFinite(budget) ? { timeoutMs: Math.max(1, budget) } : {}),
  };
}
