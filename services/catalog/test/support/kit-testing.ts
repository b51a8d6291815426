/** The kit's test helpers, in one place for the catalog tests. */
export {
  createLogSink,
  createTestInterceptors,
  createTestIssuer,
  type LogSink,
  openTestEvents,
  type TestIssuer,
} from "@meshmart/kit/testing";
