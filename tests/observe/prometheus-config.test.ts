/**
 * The generated Prometheus config, checked by Prometheus' own promtool: a job per service
 * of the call graph, the edge and any extra Envoys (how the sidecar mesh adds its
 * sidecars), the project's rules loaded; and the test-only copy of the rules with short
 * `for:`s is valid too and leaves the shipped file alone.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { parse } from "yaml";
import { loadCallGraph } from "../../scripts/deploy/callgraph.js";
import {
  EDGE_JOB,
  prometheusConfig,
  prometheusYaml,
  RULES_FILE,
  rulesWithFor,
} from "../../scripts/observe/prometheus-config.js";

const PROMTOOL = "/usr/bin/promtool";
const skip = existsSync(PROMTOOL) ? false : `no ${PROMTOOL}: apt-get install prometheus`;
const graph = loadCallGraph();
const services = [...graph.services.keys()];

interface Job {
  job_name: string;
  metrics_path: string;
  static_configs: { targets: string[]; labels: Record<string, string> }[];
}

test("a job per service, the edge and each extra Envoy, labelled as the rules expect", () => {
  const config = prometheusConfig({
    graph,
    adminPort: (name) => 19300 + services.indexOf(name),
    edgeAdminPort: 9901,
    envoys: [{ name: "sidecar-orders", port: 15000, labels: { workload: "orders" } }],
  }) as { scrape_configs: Job[]; rule_files: string[] };
  const jobs = new Map(config.scrape_configs.map((j) => [j.job_name, j]));
  assert.deepEqual([...jobs.keys()], [...services, EDGE_JOB, "sidecar-orders"]);
  for (const name of services) {
    const job = jobs.get(name) as Job;
    assert.equal(job.metrics_path, "/metrics");
    assert.deepEqual(job.static_configs, [
      {
        targets: [`127.0.0.1:${19300 + services.indexOf(name)}`],
        labels: { namespace: graph.namespace },
      },
    ]);
  }
  assert.equal(jobs.get(EDGE_JOB)?.metrics_path, "/stats/prometheus");
  assert.deepEqual(jobs.get("sidecar-orders")?.static_configs[0]?.labels, {
    namespace: graph.namespace,
    workload: "orders",
  });
  assert.deepEqual(config.rule_files, [RULES_FILE]);
});

test("services without a port are left out; a duplicate job name is refused", () => {
  const config = prometheusConfig({
    graph,
    adminPort: (name) => (name === "catalog" ? 9302 : undefined),
  }) as { scrape_configs: Job[] };
  assert.deepEqual(
    config.scrape_configs.map((j) => j.job_name),
    ["catalog"],
  );
  assert.throws(
    () =>
      prometheusConfig({
        graph,
        adminPort: () => 1,
        envoys: [{ name: "catalog", port: 2 }],
      }),
    /two scrape jobs named catalog/,
  );
});

test("rulesWithFor changes every `for:` and nothing else", () => {
  const shipped = readFileSync(RULES_FILE, "utf8");
  const short = parse(rulesWithFor(shipped, "30s")) as {
    groups: { rules: Record<string, unknown>[] }[];
  };
  const original = parse(shipped) as typeof short;
  for (const [g, group] of original.groups.entries()) {
    for (const [r, rule] of group.rules.entries()) {
      const copy = short.groups[g]?.rules[r] as Record<string, unknown>;
      assert.deepEqual(copy, "for" in rule ? { ...rule, for: "30s" } : rule);
    }
  }
  assert.equal(readFileSync(RULES_FILE, "utf8"), shipped);
});

test("promtool accepts the config, with the shipped rules and the short copy", { skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), "meshmart-promcfg-"));
  try {
    const rules = join(dir, "rules.yaml");
    writeFileSync(rules, rulesWithFor(readFileSync(RULES_FILE, "utf8"), "30s"));
    for (const ruleFiles of [[RULES_FILE], [rules]]) {
      const file = join(dir, "prometheus.yml");
      writeFileSync(
        file,
        prometheusYaml({
          graph,
          adminPort: () => 9300,
          edgeAdminPort: 9901,
          envoys: [{ name: "sidecar-catalog", port: 15001 }],
          ruleFiles,
          scrapeInterval: "1s",
        }),
      );
      const out = execFileSync(PROMTOOL, ["check", "config", file], { encoding: "utf8" });
      assert.match(out, /SUCCESS/);
      // Every rule of the shipped file, as many in the short copy.
      const shipped = parse(readFileSync(RULES_FILE, "utf8")) as { groups: { rules: unknown[] }[] };
      const count = shipped.groups.reduce((n, g) => n + g.rules.length, 0);
      assert.match(out, new RegExp(`SUCCESS: ${count} rules found`));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
