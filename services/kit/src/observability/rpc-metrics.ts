import { Counter, Histogram, type Registry } from "prom-client";

/** RED metrics for RPCs, one set per process, labelled by service, method and code. */
export interface RpcMetrics {
  /** Records one finished call. `code` is the gRPC code name, "ok" on success. */
  observe(
    service: string,
    method: string,
    code: string,
    seconds: number,
    side: "server" | "client",
  ): void;
}

/**
 * Registers `rpc_requests_total`, `rpc_request_duration_seconds` and
 * `rpc_errors_total`. Label children are cached per (method, code) because a labels()
 * lookup per call is the hot path's largest metrics cost.
 */
export function createRpcMetrics(registry: Registry): RpcMetrics {
  const requests = new Counter({
    name: "rpc_requests_total",
    help: "RPCs finished, by side, service, method and status code.",
    labelNames: ["side", "service", "method", "code"] as const,
    registers: [registry],
  });
  const errors = new Counter({
    name: "rpc_errors_total",
    help: "RPCs finished with a status other than OK.",
    labelNames: ["side", "service", "method", "code"] as const,
    registers: [registry],
  });
  const duration = new Histogram({
    name: "rpc_request_duration_seconds",
    help: "RPC latency from first byte in to last byte out, by side, service and method.",
    labelNames: ["side", "service", "method"] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  interface Children {
    count: ReturnType<typeof requests.labels>;
    fail?: ReturnType<typeof errors.labels>;
    time: ReturnType<typeof duration.labels>;
  }
  // side → service → method → code: lookups with the label strings as they come, where a
  // joined key was a string built per call.
  const children = new Map<string, Map<string, Map<string, Map<string, Children>>>>();
  const level = <K, V>(map: Map<K, V>, key: K, make: () => V): V => {
    let value = map.get(key);
    if (value === undefined) {
      value = make();
      map.set(key, value);
    }
    return value;
  };
  return {
    observe(service, method, code, seconds, side) {
      const byCode = children.get(side)?.get(service)?.get(method);
      let child = byCode?.get(code);
      if (child === undefined) {
        const labels = { side, service, method, code };
        child = {
          count: requests.labels(labels),
          time: duration.labels({ side, service, method }),
          ...(code === "ok" ? {} : { fail: errors.labels(labels) }),
        };
        const bySide = level(children, side, () => new Map());
        const byService = level(bySide, service, () => new Map());
        level(byService, method, () => new Map()).set(code, child);
      }
      child.count.inc();
      child.fail?.inc();
      child.time.observe(seconds);
    },
  };
}
