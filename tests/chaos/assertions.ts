import assert from "node:assert/strict";
import type { ChaosReport } from "./chaos.js";

/**
 * What every chaos run must show: no broken invariant or dead letter, every kind of fault
 * happened, and compensation after an authorization ran both ways. Through the sidecar
 * mesh, also every hop over mTLS and no declared call refused.
 */
export function assertChaosHeld(report: ChaosReport): void {
  assert.deepEqual(report.violations, []);
  assert.deepEqual(report.deadLetters, []);
  if (report.mesh !== undefined) {
    // MESH=1: every hop went over mTLS, and no call the graph declares was refused.
    assert.ok((report.mesh.handshakes ?? 0) > 0, JSON.stringify(report.mesh));
    assert.equal(report.mesh.rbacDenied, 0, JSON.stringify(report.mesh));
  }
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
}
