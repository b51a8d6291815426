/**
 * schemathesis (a property-based OpenAPI fuzzer, pinned in scripts/tools/requirements.txt)
 * against the public REST API as users reach it: /openapi.json served by Envoy, every
 * operation called through Envoy in front of all six services, with a real customer token.
 * Bounded in time and seeded, so a failure reproduces with the printed command.
 *
 * Checks: no 5xx, every status and content type the document declares, every response body
 * valid against its schema. Nothing is excluded: a failure is fixed in the services or in
 * the document.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { toolPath } from "../../scripts/lib/tools.js";
import { type Mesh, startMesh } from "../support/mesh.js";
import { createRestCall } from "../support/rest.js";

const SEED = 20261202;
/** The whole run's budget; schemathesis stops generating when it is spent. */
const MAX_SECONDS = Number(process.env.SCHEMATHESIS_MAX_SECONDS ?? 120);
const MAX_EXAMPLES = Number(process.env.SCHEMATHESIS_MAX_EXAMPLES ?? 25);
const CHECKS = [
  "not_a_server_error",
  "status_code_conformance",
  "content_type_conformance",
  "response_schema_conformance",
];

let mesh: Mesh;
let token: string;
let reports: string;

before(async () => {
  mesh = await startMesh({ label: "fuzz", edge: true });
  reports = mkdtempSync(join(tmpdir(), "meshmart-schemathesis-"));
  const rest = createRestCall(() => mesh.edgeUrl);
  const email = `fuzz-${Date.now()}@example.com`;
  const password = "correct horse battery staple";
  await rest("POST", "/v1/users", { email, password, displayName: "Fuzz" });
  token = (await rest("POST", "/v1/sessions", { email, password })).accessToken as string;
  assert.ok(token, "a real access token");
});

after(async () => {
  await mesh?.stop();
  if (reports !== undefined) rmSync(reports, { recursive: true, force: true });
});

test("schemathesis finds no server error and no departure from /openapi.json", {
  timeout: (MAX_SECONDS + 120) * 1000,
}, async () => {
  const args = [
    "run",
    `${mesh.edgeUrl}/openapi.json`,
    "--url",
    mesh.edgeUrl,
    "--checks",
    CHECKS.join(","),
    "--header",
    `Authorization: Bearer ${token}`,
    "--seed",
    String(SEED),
    "--max-examples",
    String(MAX_EXAMPLES),
    "--max-time",
    String(MAX_SECONDS),
    "--generation-database",
    "none",
    "--request-timeout",
    "20",
    "--workers",
    "1",
    "--no-color",
    "--report",
    "ndjson",
    "--report-dir",
    reports,
  ];
  const { code, output } = await run(toolPath("schemathesis"), args, reports);
  // The summary is the run's last lines; print it whatever happened (it names any failure
  // with a curl command to reproduce it).
  const summary = output.split("\n").slice(-60).join("\n");
  process.stdout.write(`# schemathesis ${args.slice(0, 2).join(" ")} … (seed ${SEED})\n`);
  for (const line of summary.split("\n")) process.stdout.write(`# ${line}\n`);
  assert.equal(code, 0, `schemathesis failed:\n${summary}`);
  // The run really happened: its event log names the operations it tested.
  const events = readFileSync(join(reports, ndjsonReport(reports)), "utf8");
  assert.match(events, /\/v1\/orders/);
  assert.match(events, /\/v1\/products/);
});

function ndjsonReport(dir: string): string {
  const name = readdirSync(dir).find((file) => file.endsWith(".ndjson"));
  assert.ok(name, "schemathesis wrote its report");
  return name;
}

/** Runs in `cwd`: schemathesis keeps state in ./.schemathesis, which must not land in the tree. */
function run(
  command: string,
  args: string[],
  cwd: string,
): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd,
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? tmpdir(), NO_COLOR: "1" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, output }));
  });
}
