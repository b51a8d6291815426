/** The kit's test helpers, in one place for the catalog tests. */
export {
  bearer,
  createLogSink,
  createTestInterceptors,
  createTestIssuer,
  createTestTransport,
  type LogSink,
  openServiceTestDatabase,
  openTestEvents,
  type TestIssuer,
} from "@meshmart/kit/testing";
