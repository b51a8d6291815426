import { randomUUID } from "node:crypto";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { INVALID_TRACEID as INVALID_TRACE_ID } from "@opentelemetry/api";
import type { Logger } from "pino";
import { requestIdKey, spanKey } from "../context.js";
import type { RpcMetrics } from "../observability/rpc-metrics.js";

const codeNames = new Map<number, string>(
  Object.entries(Code)
    .filter((e): e is [string, number] => typeof e[1] === "number")
    .map(([name, value]) => [value, toSnake(name)]),
);

/** `DeadlineExceeded` → `deadline_exceeded`, the spelling gRPC tooling and dashboards use. */
function toSnake(name: string): string {
  return name.replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
}

/** The snake_case gRPC name of a Connect code ("ok" for success). */
export function codeName(code: Code | undefined): string {
  return code === undefined ? "ok" : (codeNames.get(code) ?? "unknown");
}

/** Which RPCs get an access-log line. */
export type AccessLogMode = "all" | "errors" | "off";

/**
 * One access-log line and one RED observation per RPC, after the error interceptor
 * has decided the final code. Adopts the caller's `x-request-id` or makes one, and
 * returns it with errors (successes skip it: extra response metadata on every call
 * costs more than the id is worth when nothing went wrong). Logs the procedure, code and duration, never
 * the messages: requests can carry passwords and card numbers.
 */
export function createObserveInterceptor(
  service: string,
  logger: Logger,
  metrics: RpcMetrics,
  accessLog: AccessLogMode = "all",
): Interceptor {
  return (next) => async (req) => {
    const started = performance.now();
    const requestId = req.header.get("x-request-id") ?? randomUUID();
    req.contextValues.set(requestIdKey, requestId);
    const method = req.method.name;
    const finish = (code: Code | undefined, message?: string) => {
      const ms = performance.now() - started;
      const name = codeName(code);
      metrics.observe(service, method, name, ms / 1000, "server");
      const trace = req.contextValues.get(spanKey)?.spanContext();
      const fields = {
        rpc: `${req.service.typeName}/${method}`,
        code: name,
        duration_ms: Math.round(ms * 100) / 100,
        request_id: requestId,
        ...(trace === undefined || trace.traceId === INVALID_TRACE_ID
          ? {}
          : { trace_id: trace.traceId, span_id: trace.spanId }),
      };
      if (code === undefined || code === Code.Canceled) {
        if (accessLog === "all") logger.info(fields, "rpc");
      } else if (accessLog !== "off") {
        logger.warn({ ...fields, error: message }, "rpc failed");
      }
    };
    try {
      const res = await next(req);
      if (!res.stream) {
        finish(undefined);
        return res;
      }
      return { ...res, message: observeStream(res.message, finish) };
    } catch (reason) {
      const err = ConnectError.from(reason);
      err.metadata.set("x-request-id", requestId);
      finish(err.code, err.rawMessage);
      throw err;
    }
  };
}

async function* observeStream<T>(
  source: AsyncIterable<T>,
  finish: (code: Code | undefined, message?: string) => void,
): AsyncIterable<T> {
  try {
    yield* source;
    finish(undefined);
  } catch (reason) {
    const err = ConnectError.from(reason);
    finish(err.code, err.rawMessage);
    throw reason;
  }
}
