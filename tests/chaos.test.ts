import assert from "node:assert/strict";
import { test } from "node:test";
import { runChaos } from "./chaos/chaos.js";
import { formatReport } from "./chaos/report.js";

// The chaos test at the size `make test` affords (`make test-chaos` runs 2,000 orders):
// orders flow while every service is killed -9 and restarted, NATS is killed and
// restarted, and Postgres is restarted; afterwards every invariant of the store holds.
test("orders survive kill -9 of every service and restarts of NATS and Postgres", async () => {
  const report = await runChaos({
    orders: Number(process.env.CHAOS_ORDERS ?? 120),
    concurrency: 8,
    minChaosMs: Number(process.env.CHAOS_MIN_MS ?? 25_000),
    settleMs: 90_000,
    log: (line) => process.stdout.write(`# ${line}\n`),
  });
  process.stdout.write(`${formatReport(report).replace(/^/gm, "# ")}\n`);
  assert.deepEqual(report.violations, []);
  assert.deepEqual(report.deadLetters, []);
  // Every kind of fault happened at least once.
  for (const target of [
    "orders",
    "inventory",
    "payments",
    "catalog",
    "notifications",
    "identity",
    "nats",
    "postgres",
  ]) {
    assert.ok(
      report.faults.some((f) => f.startsWith(`${target} (`)),
      `no successful ${target} fault in ${report.faults.join(", ")}`,
    );
  }
  const { confirmed = 0, cancelled = 0 } = report.counts;
  assert.ok(confirmed > 0 && cancelled > 0, JSON.stringify(report.counts));
  // Compensation after a successful authorization ran, both ways, not just the early
  // cancellations (declines, out of stock): a capture the processor declined, and customers
  // cancelling mid-saga, some of them after the authorization (a void or a refund).
  const paths = report.paths;
  const afterAuthorization = (paths.customer_voided ?? 0) + (paths.customer_refunded ?? 0);
  assert.ok(
    (paths.capture_failed ?? 0) >= 3,
    `too few declined captures: ${JSON.stringify(paths)}`,
  );
  assert.ok(
    (paths.customer_cancelled ?? 0) >= 3,
    `too few cancellations: ${JSON.stringify(paths)}`,
  );
  assert.ok(
    afterAuthorization >= 1,
    `no cancellation after an authorization: ${JSON.stringify(paths)}`,
  );
});
