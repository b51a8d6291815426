/** The kit's test helpers, in one place for the catalog tests. */
export {
  createLogSink,
  createTestInterceptors,
  createTestIssuer,
  type LogSink,
  type TestIssuer,
} from "@meshmart/kit/testing";
