import { randomUUID } from "node:crypto";
import type { DescMethod } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type Interceptor,
  type StreamRequest,
  type UnaryRequest,
} from "@connectrpc/connect";
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

/** Calls at least this slow get a warning line whatever their code; see {@link createObserveInterceptor}. */
export const DEFAULT_SLOW_RPC_MS = 1_000;

/**
 * Codes that mean the server (or something it depends on) failed: someone should look.
 * Everything else a handler returns is the system answering a request as designed: bad
 * input, missing or duplicate records, refusals (sold out, not yours, not signed in),
 * a lost optimistic-concurrency race (ABORTED, which the client retries), a client that
 * went away. Those are counted in the metrics by code; as log warnings they buried real
 * problems (900 per flash sale for sold-out alone).
 */
const serverFaultCodes: ReadonlySet<Code> = new Set([
  Code.Unknown,
  Code.Internal,
  Code.DataLoss,
  Code.Unavailable,
  Code.DeadlineExceeded,
  Code.Unimplemented,
  // Ambiguous: a rate limit the client tripped, or the server out of a resource (pool,
  // memory, message size). Either way a surge of them is worth an operator's attention.
  Code.ResourceExhausted,
]);

/** Codes whose access-log line is an error rather than a warning: data or code is broken. */
const errorCodes: ReadonlySet<Code> = new Set([Code.Unknown, Code.Internal, Code.DataLoss]);

/** Options of {@link createObserveInterceptor} beyond the access-log mode. */
export interface ObserveOptions {
  /** Duration from which a call is logged as a warning even when it succeeded; default 1 s. */
  slowMs?: number;
}

/**
 * One access-log line and one RED observation per RPC, after the error interceptor
 * has decided the final code. Adopts the caller's `x-request-id` or makes one, and
 * returns it with errors (successes skip it: extra response metadata on every call
 * costs more than the id is worth when nothing went wrong). Logs the procedure, code and duration, never
 * the messages: requests can carry passwords and card numbers.
 *
 * The level says who has a problem. Successes and client-caused refusals (INVALID_ARGUMENT,
 * NOT_FOUND, FAILED_PRECONDITION, PERMISSION_DENIED, CANCELED, …) are info; server faults
 * are warn (UNAVAILABLE, DEADLINE_EXCEEDED, UNIMPLEMENTED, RESOURCE_EXHAUSTED) or error
 * (INTERNAL, UNKNOWN, DATA_LOSS). A call slower than `slowMs` is logged at warn or above
 * with `slow: true` in modes "all" and "errors", even when it succeeded, since latency is
 * a fault the code alone does not show. "errors" logs every non-OK call (at its level)
 * plus slow ones; "off" logs nothing.
 */
export function createObserveInterceptor(
  service: string,
  logger: Logger,
  metrics: RpcMetrics,
  accessLog: AccessLogMode = "all",
  options: ObserveOptions = {},
): Interceptor {
  const slowMs = options.slowMs ?? DEFAULT_SLOW_RPC_MS;
  // `service/Method` per method, made once: only logged lines need it.
  const procedures = new WeakMap<DescMethod, string>();
  // One function for every call (arguments instead of a closure per call); the log line's
  // fields are built only when the line is written.
  const finish = (
    req: UnaryRequest | StreamRequest,
    started: number,
    requestId: string,
    code: Code | undefined,
    message?: string,
  ): void => {
    const ms = performance.now() - started;
    const name = codeName(code);
    const method = req.method.name;
    metrics.observe(service, method, name, ms / 1000, "server");
    if (accessLog === "off") return;
    const slow = ms >= slowMs;
    // CANCELED is logged like a success, as before: the client hung up, nothing failed.
    const failed = code !== undefined && code !== Code.Canceled;
    if (!failed && !slow && accessLog !== "all") return;
    let rpc = procedures.get(req.method);
    if (rpc === undefined) {
      rpc = `${req.service.typeName}/${method}`;
      procedures.set(req.method, rpc);
    }
    const trace = req.contextValues.get(spanKey)?.spanContext();
    // Same fields in the same order as ever: rpc, code, duration, request id, trace, error, slow.
    const line: Record<string, unknown> = {
      rpc,
      code: name,
      duration_ms: Math.round(ms * 100) / 100,
      request_id: requestId,
    };
    if (trace !== undefined && trace.traceId !== INVALID_TRACE_ID) {
      line.trace_id = trace.traceId;
      line.span_id = trace.spanId;
    }
    if (failed) line.error = message;
    if (slow) line.slow = true;
    const msg = failed ? "rpc failed" : "rpc";
    if (code !== undefined && errorCodes.has(code)) logger.error(line, msg);
    else if (slow || (code !== undefined && serverFaultCodes.has(code))) logger.warn(line, msg);
    else logger.info(line, msg);
  };
  return (next) => async (req) => {
    const started = performance.now();
    const requestId = req.header.get("x-request-id") ?? randomUUID();
    req.contextValues.set(requestIdKey, requestId);
    try {
      const res = await next(req);
      if (!res.stream) {
        finish(req, started, requestId, undefined);
        return res;
      }
      return {
        ...res,
        message: observeStream(res.message, (code, message) =>
          finish(req, started, requestId, code, message),
        ),
      };
    } catch (reason) {
      const err = ConnectError.from(reason);
      err.metadata.set("x-request-id", requestId);
      finish(req, started, requestId, err.code, err.rawMessage);
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
