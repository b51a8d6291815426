import type { ChaosReport } from "./chaos.js";

/**
 * The chaos run's counts, the paths its orders took, its faults and findings, as printed by
 * the test and `make test-chaos`.
 */
export function formatReport(report: ChaosReport): string {
  const lines = [
    `chaos counts: ${Object.entries(report.counts)
      .map(([k, v]) => `${k}=${v}`)
      .join(" ")}`,
    `chaos paths: ${Object.entries(report.paths)
      .map(([k, v]) => `${k}=${v}`)
      .join(" ")}`,
    `chaos faults: ${report.faults.join(", ")}`,
  ];
  if (report.mesh !== undefined) {
    lines.push(
      `chaos mesh: ${Object.entries(report.mesh)
        .map(([k, v]) => `${k}=${v}`)
        .join(" ")}`,
    );
  }
  for (const d of report.deadLetters) lines.push(`dead letter: ${d}`);
  for (const v of report.violations) lines.push(`VIOLATION: ${v}`);
  if (report.violations.length === 0) lines.push("chaos: every invariant held");
  return lines.join("\n");
}
