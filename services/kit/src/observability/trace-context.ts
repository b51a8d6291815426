import type { HandlerContext } from "@connectrpc/connect";
import {
  type Attributes,
  context,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  trace,
} from "@opentelemetry/api";
import { suppressTracing } from "@opentelemetry/core";
import { spanKey } from "../context.js";
import { endSpanWithError } from "./tracing.js";

/** W3C trace context (traceparent, and tracestate when present) as a plain record. */
export type StoredTraceContext = Readonly<Record<string, string>>;

/**
 * The trace context of the RPC `ctx` serves, to store with work that runs later, outside
 * the request (a saga row). Taken from the server span in ctx.values, so it is there
 * whether or not spans are exported; empty when the call has no trace.
 */
export function traceContextOf(ctx: HandlerContext): StoredTraceContext {
  const carrier: Record<string, string> = {};
  const span = ctx.values.get(spanKey);
  if (span !== undefined) propagation.inject(trace.setSpan(ROOT_CONTEXT, span), carrier);
  return carrier;
}

/** Adds attributes to the RPC's server span (e.g. the id of the order a call created). */
export function annotateCallSpan(ctx: HandlerContext, attributes: Attributes): void {
  ctx.values.get(spanKey)?.setAttributes(attributes);
}

/**
 * Runs `fn` in a new span that continues a stored trace context, so work done later (a saga
 * step, by whichever replica claims it) belongs to the trace of the request that asked for
 * it instead of starting a trace of its own. Calls and events made inside take the span as
 * their parent. Without a stored context the span starts a trace; without a recording
 * tracer it costs nothing.
 */
export async function inStoredTrace<T>(
  stored: StoredTraceContext | null | undefined,
  name: string,
  attributes: Attributes,
  fn: (span: Span) => Promise<T>,
): Promise<T> {
  const parent = propagation.extract(ROOT_CONTEXT, stored ?? {});
  const span = trace
    .getTracer("meshmart-kit")
    .startSpan(name, { kind: SpanKind.INTERNAL, attributes }, parent);
  try {
    const result = await context.with(trace.setSpan(parent, span), () => fn(span));
    span.end();
    return result;
  } catch (reason) {
    endSpanWithError(span, reason);
    throw reason;
  }
}

/**
 * Runs `fn` outside any trace, recording no spans: for background polling (claiming due
 * work every second), which would otherwise leave a one-span trace per poll, or — when
 * started from inside a request — attach itself to that request's trace. Work it hands on
 * starts its own span with {@link inStoredTrace}.
 */
export function untraced<T>(fn: () => T): T {
  return context.with(suppressTracing(ROOT_CONTEXT), fn);
}
