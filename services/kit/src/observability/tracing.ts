import {
  context,
  propagation,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  type TextMapSetter,
  trace,
} from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  type SpanProcessor,
} from "@opentelemetry/sdk-trace-base";

/** Reads W3C trace context from Fetch-API Headers (how Connect hands us metadata). */
export const headersGetter: TextMapGetter<Headers> = {
  get: (carrier, key) => carrier.get(key) ?? undefined,
  keys: (carrier) => [...carrier.keys()],
};

/** Writes W3C trace context into Fetch-API Headers (outgoing calls, NATS headers adapt it). */
export const headersSetter: TextMapSetter<Headers> = {
  set: (carrier, key, value) => carrier.set(key, value),
};

/** Options for {@link setupTracing}. */
export interface TracingOptions {
  service: string;
  /** OTLP/HTTP traces URL; without it spans get ids (for logs and propagation) but go nowhere. */
  otlpTracesUrl?: string | undefined;
}

/** Handle to flush and stop tracing at shutdown. */
export interface TracingHandle {
  /** Whether spans are recorded and exported (an OTLP URL was configured). */
  exporting: boolean;
  shutdown(): Promise<void>;
}

let installed: TracingHandle | undefined;

/**
 * Installs W3C trace-context propagation and, when an OTLP URL is configured, a recording
 * tracer provider with an async context manager. Without a URL no spans are recorded:
 * the trace id of the caller still flows (through ctx.values and `outgoing(ctx)`) into
 * logs and downstream calls, but no per-call span objects and no AsyncLocalStorage are
 * paid for — on Node 20 its promise hooks cost a fifth of a small RPC's CPU.
 * Idempotent: a process (or a test file starting several servers) installs once.
 */
export async function setupTracing(options: TracingOptions): Promise<TracingHandle> {
  if (installed !== undefined) return installed;
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  if (options.otlpTracesUrl === undefined) {
    installed = { exporting: false, shutdown: async () => {} };
    return installed;
  }
  const { OTLPTraceExporter } = await import("@opentelemetry/exporter-trace-otlp-proto");
  const { resourceFromAttributes } = await import("@opentelemetry/resources");
  const processors: SpanProcessor[] = [
    new BatchSpanProcessor(new OTLPTraceExporter({ url: options.otlpTracesUrl })),
  ];
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ "service.name": options.service }),
    spanProcessors: processors,
  });
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  trace.setGlobalTracerProvider(provider);
  installed = { exporting: true, shutdown: () => provider.shutdown() };
  return installed;
}

/** Whether a recording tracer is installed (spans worth running handler code inside). */
export function tracingExports(): boolean {
  return installed?.exporting === true;
}

/** Ends a span with the error recorded; used by server, client, SQL and NATS spans alike. */
export function endSpanWithError(span: Span, reason: unknown): void {
  span.recordException(reason instanceof Error ? reason : String(reason));
  span.setStatus({ code: SpanStatusCode.ERROR });
  span.end();
}

export { context as otelContext, propagation, SpanKind, trace };
