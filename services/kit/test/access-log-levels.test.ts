import assert from "node:assert/strict";
import { test } from "node:test";
import { Code, ConnectError, createContextValues } from "@connectrpc/connect";
import { Registry } from "prom-client";
import { type AccessLogMode, createObserveInterceptor } from "../src/interceptors/observe.js";
import { createLogger } from "../src/observability/logger.js";
import { createRpcMetrics } from "../src/observability/rpc-metrics.js";
import { createLogSink } from "../src/testing/log-sink.js";

/**
 * Runs one unary call through the observe interceptor alone, the handler failing with
 * `code` (or succeeding when undefined) after `delayMs`, and returns the lines logged.
 */
async function logged(
  code: Code | undefined,
  options: { mode?: AccessLogMode; slowMs?: number; delayMs?: number } = {},
): Promise<Record<string, unknown>[]> {
  const sink = createLogSink();
  const logger = createLogger({ service: "inventory", level: "debug", destination: sink.stream });
  const interceptor = createObserveInterceptor(
    "inventory",
    logger,
    createRpcMetrics(new Registry()),
    options.mode ?? "all",
    options.slowMs === undefined ? {} : { slowMs: options.slowMs },
  );
  const handler = interceptor(async () => {
    if (options.delayMs !== undefined) await new Promise((r) => setTimeout(r, options.delayMs));
    if (code !== undefined) throw new ConnectError("sold out", code);
    return { stream: false, message: {} } as never;
  });
  const req = {
    header: new Headers(),
    contextValues: createContextValues(),
    method: { name: "Reserve" },
    service: { typeName: "meshmart.inventory.v1.InventoryService" },
  } as never;
  await handler(req).catch(() => undefined);
  await new Promise((r) => setImmediate(r));
  return sink.lines();
}

test("a FailedPrecondition refusal is logged at info, not as a warning", async () => {
  const lines = await logged(Code.FailedPrecondition);
  assert.equal(lines.length, 1);
  assert.equal(lines[0]?.level, "info");
  assert.equal(lines[0]?.code, "failed_precondition");
  assert.equal(lines[0]?.msg, "rpc failed");
});

test("other client-caused codes are info too", async () => {
  for (const code of [
    Code.InvalidArgument,
    Code.NotFound,
    Code.AlreadyExists,
    Code.PermissionDenied,
    Code.Unauthenticated,
    Code.OutOfRange,
    Code.Aborted,
    Code.Canceled,
  ]) {
    const [line] = await logged(code);
    assert.equal(line?.level, "info", `code ${Code[code]}`);
  }
});

test("an Internal failure is an error, an Unavailable one a warning", async () => {
  const [internal] = await logged(Code.Internal);
  assert.equal(internal?.level, "error");
  assert.equal(internal?.code, "internal");
  for (const code of [
    Code.Unavailable,
    Code.DeadlineExceeded,
    Code.Unimplemented,
    Code.ResourceExhausted,
  ]) {
    const [line] = await logged(code);
    assert.equal(line?.level, "warn", `code ${Code[code]}`);
  }
});

test("ACCESS_LOG=errors logs failures at their level and skips fast successes", async () => {
  assert.deepEqual(await logged(undefined, { mode: "errors" }), []);
  const [refusal] = await logged(Code.FailedPrecondition, { mode: "errors" });
  assert.equal(refusal?.level, "info");
  const [internal] = await logged(Code.Internal, { mode: "errors" });
  assert.equal(internal?.level, "error");
});

test("ACCESS_LOG=off logs nothing, not even slow failures", async () => {
  assert.deepEqual(await logged(Code.Internal, { mode: "off" }), []);
  assert.deepEqual(await logged(undefined, { mode: "off", slowMs: 1, delayMs: 5 }), []);
});

test("a slow call is a warning whatever its code, in modes all and errors", async () => {
  for (const mode of ["all", "errors"] as const) {
    const [ok] = await logged(undefined, { mode, slowMs: 1, delayMs: 5 });
    assert.equal(ok?.level, "warn", mode);
    assert.equal(ok?.slow, true);
    assert.equal(ok?.msg, "rpc");
    const [refusal] = await logged(Code.FailedPrecondition, { mode, slowMs: 1, delayMs: 5 });
    assert.equal(refusal?.level, "warn", mode);
  }
  const [fast] = await logged(undefined, { slowMs: 10_000 });
  assert.equal(fast?.level, "info");
  assert.equal(fast?.slow, undefined);
});
