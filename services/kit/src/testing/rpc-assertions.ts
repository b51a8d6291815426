import assert from "node:assert/strict";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Redis } from "ioredis";
import { ViolationsSchema } from "../../gen/buf/validate/validate_pb.js";

/** The ConnectError a call failed with; fails the test when it succeeded. */
export async function rejection(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    await promise;
  } catch (reason) {
    return ConnectError.from(reason);
  }
  assert.fail("expected the call to fail");
}

/** `(field path, rule id)` of each violation in the error's buf.validate.Violations detail. */
export function violationsOf(err: ConnectError): { path: string; rule: string }[] {
  assert.equal(err.code, Code.InvalidArgument, `expected INVALID_ARGUMENT, got: ${err.message}`);
  const [detail] = err.findDetails(ViolationsSchema);
  assert.ok(detail, "buf.validate.Violations detail present");
  return detail.violations.map((v) => ({
    path: (v.field?.elements ?? []).map((e) => e.fieldName).join("."),
    rule: v.ruleId,
  }));
}

/** Deletes every key under `prefix` (a test run's own keys in a shared Redis). */
export async function deleteKeys(redis: Redis, prefix: string): Promise<void> {
  let cursor = "0";
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 500);
    if (keys.length > 0) await redis.del(...keys);
    cursor = next;
  } while (cursor !== "0");
}
