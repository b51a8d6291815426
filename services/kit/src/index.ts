export { createServiceClient, outgoing, type ServiceClientOptions } from "./client.js";
export {
  ConfigError,
  configFields,
  type KitConfig,
  kitConfigSchema,
  loadConfig,
} from "./config.js";
export { type Caller, callerKey, deadlineKey, remainingMs, requestIdKey } from "./context.js";
export { instrumentStore } from "./data/instrument-store.js";
export { migrate } from "./data/migrations.js";
export { createPostgres, postgresCheck, type Sql } from "./data/postgres.js";
export { createRedis, redisCheck } from "./data/redis.js";
export {
  openServiceData,
  type ServiceData,
  type ServiceDataOptions,
} from "./data/service-data.js";
export { beginWithLast, type LastWrite } from "./data/transaction.js";
export { type ErrorInfo, ErrorInfoSchema, errorInfosOf, errorWithInfo } from "./error-info.js";
export * from "./events/index.js";
export {
  createEventNames,
  domainOf,
  EVENT_DOMAINS,
  EVENT_SUBJECTS,
  type EventDomain,
  type EventNames,
} from "./events/names.js";
export {
  migrateEventTables,
  newEvent,
  type OutboundEvent,
  writeEvents,
} from "./events/outbox.js";
export {
  createJwtVerifier,
  createServerInterceptors,
  PUBLIC_METHODS,
  requireCaller,
  requireRole,
  type TokenVerifier,
} from "./interceptors/index.js";
export { NUL_RULE_ID } from "./interceptors/nul-strings.js";
export { type Closable, runMain } from "./main.js";
export { createLogDestination, createLogger, type Logger } from "./observability/logger.js";
export { createRpcMetrics, type RpcMetrics } from "./observability/rpc-metrics.js";
export {
  annotateCallSpan,
  inStoredTrace,
  type StoredTraceContext,
  traceContextOf,
  untraced,
} from "./observability/trace-context.js";
export { createPageTokens, PAGE_TOKEN_KEY_BYTES, type PageTokens } from "./page-tokens.js";
export { createRuntime, type Runtime, type RuntimeOverrides, serve } from "./runtime.js";
export type { DependencyCheck } from "./server/health-monitor.js";
export { LIVENESS_SERVICE, type Routes, type ServiceHost } from "./server/service-host.js";
export {
  type ServiceConfig,
  type ServiceDefinition,
  type ServiceParts,
  startService,
  type Worker,
} from "./service.js";
export { fieldViolation } from "./violations.js";
