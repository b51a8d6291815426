import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { parseTimeout } from "@connectrpc/connect/protocol-grpc";
import { deadlineEnforcedKey, deadlineKey } from "../context.js";

/**
 * Gives every RPC a deadline: the caller's (`grpc-timeout` or `connect-timeout-ms`), capped
 * at `maxMs`, or `maxMs` when the caller set none. A handler that outlives it is answered
 * with DEADLINE_EXCEEDED instead of holding the client, and downstream calls read the
 * deadline from `deadlineKey`. The gRPC adapter may have set the key from the call already.
 */
export function createDeadlineInterceptor(maxMs: number): Interceptor {
  // Not an async function: the common path hands on next(req)'s own promise instead of
  // wrapping it in another (a promise and a microtask per call). Failures still surface as
  // rejections, never as synchronous throws.
  return (next) => (req) => {
    try {
      const now = Date.now();
      let deadline = req.contextValues.get(deadlineKey);
      if (deadline === Number.POSITIVE_INFINITY) {
        const callerMs = callerTimeoutMs(req.header);
        deadline = now + (callerMs === undefined ? maxMs : Math.min(callerMs, maxMs));
      } else {
        deadline = Math.min(deadline, now + maxMs);
      }
      req.contextValues.set(deadlineKey, deadline);
      const budget = deadline - now;
      if (budget <= 0)
        throw new ConnectError("deadline exceeded before the call started", Code.DeadlineExceeded);
      if (req.stream || req.contextValues.get(deadlineEnforcedKey)) return next(req);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(deadlineExceeded()), budget);
        next(req).then(
          (res) => {
            clearTimeout(timer);
            resolve(res);
          },
          (reason: unknown) => {
            clearTimeout(timer);
            reject(reason);
          },
        );
      });
    } catch (reason) {
      return Promise.reject(reason);
    }
  };
}

function deadlineExceeded(): ConnectError {
  return new ConnectError("deadline exceeded", Code.DeadlineExceeded);
}

function callerTimeoutMs(header: Headers): number | undefined {
  const connect = header.get("connect-timeout-ms");
  if (connect !== null) {
    const ms = Number.parseInt(connect, 10);
    return Number.isFinite(ms) && ms > 0 ? ms : undefined;
  }
  const grpc = header.get("grpc-timeout");
  if (grpc !== null) {
    const parsed = parseTimeout(grpc, Number.MAX_SAFE_INTEGER);
    return parsed.timeoutMs;
  }
  return undefined;
}
