import { test } from "node:test";
import { assertChaosHeld } from "./chaos/assertions.js";
import { runChaos } from "./chaos/chaos.js";
import { formatReport } from "./chaos/report.js";

// The same chaos through the Envoy sidecar mesh (`MESH=1 make test-chaos` runs it at full
// size): every call between services over mTLS, RBAC and the graph's retries, with two
// replicas of catalog, inventory and payments, each killed -9 and restarted in turn.
test("through the sidecar mesh, orders survive kill -9 of every replica and restarts of NATS and Postgres", async () => {
  const report = await runChaos({
    orders: Number(process.env.CHAOS_MESH_ORDERS ?? 100),
    concurrency: 8,
    minChaosMs: Number(process.env.CHAOS_MIN_MS ?? 25_000),
    settleMs: 90_000,
    log: (line) => process.stdout.write(`# ${line}\n`),
    sidecars: true,
  });
  process.stdout.write(`${formatReport(report).replace(/^/gm, "# ")}\n`);
  assertChaosHeld(report);
});
