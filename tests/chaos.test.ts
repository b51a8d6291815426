import { test } from "node:test";
import { assertChaosHeld } from "./chaos/assertions.js";
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
  assertChaosHeld(report);
});
