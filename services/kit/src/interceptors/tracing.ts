import { ConnectError, type Interceptor } from "@connectrpc/connect";
import {
  context,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";
import { spanKey } from "../context.js";
import { headersGetter, tracingExports } from "../observability/tracing.js";

/**
 * A SERVER span per RPC, child of the caller's span when the request carries W3C
 * `traceparent`, kept in ctx.values. When spans are exported, handler code (SQL,
 * outgoing calls, logs) also runs inside it through the async context.
 */
export function createTracingInterceptor(): Interceptor {
  const tracer = trace.getTracer("meshmart-kit");
  return (next) => (req) => {
    // Nothing to record and no trace to continue: a span would be an invalid, empty one.
    if (!tracingExports() && !req.header.has("traceparent")) return next(req);
    const parent = propagation.extract(ROOT_CONTEXT, req.header, headersGetter);
    const span = tracer.startSpan(
      `${req.service.typeName}/${req.method.name}`,
      {
        kind: SpanKind.SERVER,
        attributes: {
          "rpc.system": "grpc",
          "rpc.service": req.service.typeName,
          "rpc.method": req.method.name,
        },
      },
      parent,
    );
    req.contextValues.set(spanKey, span);
    const run = async () => {
      try {
        const res = await next(req);
        // Streams end after the handler returns; the span covers the handler, which is
        // what latency views of a stream's setup want.
        span.setAttribute("rpc.grpc.status_code", 0);
        span.end();
        return res;
      } catch (reason) {
        const err = ConnectError.from(reason);
        span.setAttribute("rpc.grpc.status_code", err.code);
        span.setStatus({ code: SpanStatusCode.ERROR, message: err.rawMessage });
        span.end();
        throw reason;
      }
    };
    return tracingExports() ? context.with(trace.setSpan(parent, span), run) : run();
  };
}
