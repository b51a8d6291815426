/**
 * `@meshmart/kit/testing`: infrastructure for `make up`, `make test` and test files.
 * Dev-only; production code never imports it.
 */

export { createTestIssuer, type TestIssuer, testAudience, testIssuerName } from "./auth.js";
export {
  type ChildExit,
  httpOk,
  type ManagedChild,
  type ManagedChildOptions,
  readyOrStopped,
  spawnManaged,
} from "./children.js";
export { EchoService, echoImpl, echoRoutes } from "./echo.js";
export {
  deleteNamespaceStreams,
  openTestEvents,
  publishLikeRelay,
  readStream,
  type TestEvents,
  type TestPublishOptions,
  waitFor,
} from "./events.js";
export { startTestHost, type TestHost, type TestHostOptions } from "./host.js";
export {
  createDatabase,
  createTestDatabase,
  databaseUrl,
  dropDatabase,
  type EnsureInfraOptions,
  ensureInfra,
  freePort,
  type Infra,
  type InfraPorts,
  isPortOpen,
  natsInfo,
  type OwnedPostgres,
  type OwnedPostgresOptions,
  quoteIdentifier,
  reapOrphan,
  redisPing,
  startOwnedPostgres,
  type TestDatabase,
  testNatsUrl,
  testPostgresUrl,
  testRedisUrl,
  uniqueName,
} from "./infra.js";
export { createTestInterceptors, createTestTransport } from "./interceptors.js";
export { createLogSink, type LogSink } from "./log-sink.js";
export { type OwnedNats, startOwnedNats } from "./owned-nats.js";
export { connectCall, envelope, grpcCall, grpcWebCall, type RawAnswer } from "./raw-rpc.js";
export { deleteKeys, rejection, violationsOf } from "./rpc-assertions.js";
export {
  bearer,
  openServiceTestDatabase,
  type ServiceTestDatabase,
} from "./service-database.js";
