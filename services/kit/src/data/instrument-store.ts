import { SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { Gauge, Histogram, type Registry } from "prom-client";

/** Metric handles shared by every store of a process (prom-client names are per registry). */
interface StoreMetrics {
  duration: Histogram<"store" | "operation" | "outcome">;
  inFlight: Gauge<"store">;
}

const metricsByRegistry = new WeakMap<Registry, StoreMetrics>();

function storeMetrics(registry: Registry): StoreMetrics {
  let metrics = metricsByRegistry.get(registry);
  if (metrics === undefined) {
    metrics = {
      duration: new Histogram({
        name: "db_operation_duration_seconds",
        help: "Duration of store operations (one or more SQL statements), by store, operation and outcome.",
        labelNames: ["store", "operation", "outcome"] as const,
        buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
        registers: [registry],
      }),
      inFlight: new Gauge({
        name: "db_operations_in_flight",
        help: "Store operations running now; near the pool size means callers queue for connections.",
        labelNames: ["store"] as const,
        registers: [registry],
      }),
    };
    metricsByRegistry.set(registry, metrics);
  }
  return metrics;
}

/**
 * Wraps every method of a store (the one module holding a service's SQL) in a CLIENT span
 * `<store>.<method>` with `db.system=postgresql`, a duration histogram and an in-flight
 * gauge. Instrumenting at the store boundary names spans after what the service meant
 * (`catalog.list`), not after SQL text, and keeps parameters (which can be personal data)
 * out of telemetry.
 */
export function instrumentStore<T extends object>(store: T, name: string, registry: Registry): T {
  const tracer = trace.getTracer("meshmart-kit");
  const { duration, inFlight } = storeMetrics(registry);
  const gauge = inFlight.labels({ store: name });
  const wrapped: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(store)) {
    if (typeof value !== "function") {
      wrapped[key] = value;
      continue;
    }
    const fn = value as (...args: unknown[]) => Promise<unknown>;
    const ok = duration.labels({ store: name, operation: key, outcome: "ok" });
    const failed = duration.labels({ store: name, operation: key, outcome: "error" });
    wrapped[key] = (...args: unknown[]) =>
      tracer.startActiveSpan(
        `${name}.${key}`,
        { kind: SpanKind.CLIENT, attributes: { "db.system": "postgresql", "db.operation": key } },
        async (span) => {
          const started = performance.now();
          gauge.inc();
          try {
            const result = await fn.apply(store, args);
            ok.observe((performance.now() - started) / 1000);
            return result;
          } catch (reason) {
            failed.observe((performance.now() - started) / 1000);
            span.recordException(reason instanceof Error ? reason : String(reason));
            span.setStatus({ code: SpanStatusCode.ERROR });
            throw reason;
          } finally {
            gauge.dec();
            span.end();
          }
        },
      );
  }
  return wrapped as T;
}
