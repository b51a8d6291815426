/** The kit's test helpers, in one place for the catalog tests. */
export {
  bearer,
  createLogSink,
  createTestInterceptors,
  createTestIssuer,
  type LogSink,
  openServiceTestDatabase,
  openTestEvents,
  type TestIssuer,
} from "@meshmart/kit/testing";
