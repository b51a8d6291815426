import type { Interceptor } from "@connectrpc/connect";
import type { Logger } from "pino";
import type { RpcMetrics } from "../observability/rpc-metrics.js";
import { createAuthInterceptor, type TokenVerifier } from "./auth.js";
import { createDeadlineInterceptor } from "./deadline.js";
import { createErrorInterceptor } from "./errors.js";
import { type AccessLogMode, createObserveInterceptor } from "./observe.js";
import { createTracingInterceptor } from "./tracing.js";
import { createValidationInterceptor } from "./validation.js";

/** What the production interceptor chain needs. */
export interface ServerInterceptorOptions {
  service: string;
  logger: Logger;
  /** Logger for the access log; defaults to `logger`. */
  accessLogger?: Logger;
  accessLog?: AccessLogMode;
  /** Duration (ms) from which any call is logged as a warning; the observe interceptor's default if unset. */
  slowRpcMs?: number;
  metrics: RpcMetrics;
  verifier?: TokenVerifier | undefined;
  /** Methods where a bad token means anonymous rather than UNAUTHENTICATED; the mesh's by default. */
  publicMethods?: ReadonlySet<string>;
  maxDeadlineMs: number;
}

/**
 * The production chain, outermost first, identical on the gRPC and Connect ports (and in
 * `createRouterTransport` tests): tracing wraps everything so logs carry trace ids;
 * observe sees the final, masked code; errors mask what handlers and the inner
 * interceptors did not mean to say; then deadline, authentication, validation.
 */
export function createServerInterceptors(options: ServerInterceptorOptions): Interceptor[] {
  return [
    createTracingInterceptor(),
    createObserveInterceptor(
      options.service,
      options.accessLogger ?? options.logger,
      options.metrics,
      options.accessLog,
      options.slowRpcMs === undefined ? {} : { slowMs: options.slowRpcMs },
    ),
    createErrorInterceptor(options.logger),
    createDeadlineInterceptor(options.maxDeadlineMs),
    createAuthInterceptor(options.verifier, options.publicMethods),
    createValidationInterceptor(),
  ];
}

export {
  createJwtVerifier,
  PUBLIC_METHODS,
  requireCaller,
  requireRole,
  type TokenVerifier,
} from "./auth.js";
export { codeName } from "./observe.js";
