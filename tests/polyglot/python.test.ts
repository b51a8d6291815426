import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { Mesh } from "../support/mesh.js";
import {
  type ClientReport,
  checkClientReport,
  clientConfig,
  meshOutput,
  startPolyglotMesh,
} from "./support/client-contract.js";

// The polyglot proof: the contracts in proto/ are all another language needs. Python stubs
// are generated with Debian's python3-grpc-tools (an old bundled protoc, 3.5.1 on bookworm,
// independent of buf) and a plain grpcio client calls the running services: health, catalog
// reads, a validation error decoded down to buf.validate.Violations, and a whole order with
// a token from identity.
const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
// Not `python3` on PATH: a pyenv or venv interpreter does not see Debian's packages.
const PYTHON = "/usr/bin/python3";
const APT_PACKAGES = "python3-grpcio python3-grpc-tools";
const ADMIN = { email: "polyglot-admin@example.com", password: "polyglot admin password" };
const run = promisify(execFile);

// The only reason to skip: the machine lacks the Debian packages. Anything else fails.
const missing = (() => {
  const probe = spawnSync(PYTHON, ["-c", "import grpc_tools"], { encoding: "utf8" });
  if (probe.error !== undefined) return `${PYTHON}: ${probe.error.message}`;
  return probe.status === 0 ? undefined : (probe.stderr.trim().split("\n").pop() ?? "failed");
})();

/** Python needs no proxy, no user site and no pyenv settings from our environment. */
const pythonEnv = { PATH: "/usr/bin:/bin", LANG: "C.UTF-8", PYTHONNOUSERSITE: "1" };

function protoFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((entry) => {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) return protoFiles(path);
    return entry.endsWith(".proto") ? [path] : [];
  });
}

async function protoc(includes: string[], files: string[], out: string): Promise<void> {
  // `-m grpc_tools.protoc` adds the well-known types (google/protobuf/*) to the includes.
  const args = [
    "-m",
    "grpc_tools.protoc",
    ...includes.map((dir) => `--proto_path=${dir}`),
    `--python_out=${out}`,
    `--grpc_python_out=${out}`,
    ...files,
  ];
  try {
    await run(PYTHON, args, { cwd: ROOT, env: pythonEnv });
  } catch (error) {
    const { stderr } = error as { stderr?: string };
    throw new Error(`grpc_tools.protoc failed: ${stderr ?? String(error)}`);
  }
}

/**
 * Stubs for our module and its materialized imports, as a Python team would generate them,
 * plus the two protos the servers speak that are not ours: grpc.health.v1 (the health.proto
 * of grpc-health-check, which the servers register) and google.rpc.Status (the envelope of
 * grpc-status-details-bin). Debian's python3-grpcio ships neither grpc_health nor
 * googleapis-common-protos.
 */
async function generateStubs(out: string): Promise<void> {
  const deps = join(ROOT, ".proto-deps");
  assert.ok(
    existsSync(join(deps, "buf", "validate", "validate.proto")),
    ".proto-deps/ is missing: run `make generate` (scripts/materialize-protos.ts writes it)",
  );
  const proto = join(ROOT, "proto");
  await protoc(
    [proto, deps],
    [
      ...protoFiles(join(proto, "meshmart")).map((f) => relative(proto, f)),
      ...protoFiles(deps).map((f) => relative(deps, f)),
    ],
    out,
  );
  const require = createRequire(join(ROOT, "services", "kit", "package.json"));
  const health = join(dirname(require.resolve("grpc-health-check/package.json")), "proto");
  const googleapis = dirname(
    createRequire(import.meta.url).resolve("google-proto-files/package.json"),
  );
  await protoc([health, googleapis], ["health/v1/health.proto", "google/rpc/status.proto"], out);
}

/** What tests/polyglot/client.py prints. */
type PythonReport = ClientReport<{ grpc: string; python: string }>;

async function runClient(gen: string, mesh: Mesh): Promise<PythonReport> {
  try {
    const { stdout } = await run(
      PYTHON,
      [join(ROOT, "tests", "polyglot", "client.py"), gen, clientConfig(mesh, ADMIN)],
      { cwd: ROOT, env: { ...pythonEnv, PYTHONDONTWRITEBYTECODE: "1" }, timeout: 45_000 },
    );
    return JSON.parse(stdout) as PythonReport;
  } catch (error) {
    const { stderr } = error as { stderr?: string };
    throw new Error(`client.py failed:\n${stderr ?? String(error)}\n${meshOutput(mesh)}`);
  }
}

test("a Python grpcio client with generated stubs: health, catalog, validation errors, a whole order", async (t) => {
  if (missing !== undefined) {
    t.skip(
      `needs Debian's ${APT_PACKAGES} for ${PYTHON} (apt-get install ${APT_PACKAGES}): ${missing}`,
    );
    return;
  }
  const gen = mkdtempSync(join(tmpdir(), "meshmart-python-"));
  let mesh: Mesh | undefined;
  try {
    // Generation first: a contract protoc cannot compile fails here, before any service starts.
    await generateStubs(gen);
    for (const module of [
      "meshmart/orders/v1/orders_service_pb2_grpc.py",
      "meshmart/catalog/v1/catalog_service_pb2.py",
      "buf/validate/validate_pb2.py",
      "google/api/annotations_pb2.py",
      "google/rpc/status_pb2.py",
      "health/v1/health_pb2_grpc.py",
    ]) {
      assert.ok(existsSync(join(gen, module)), `${module} was generated`);
    }

    // Stock is only what the Python admin sets, not a default from catalog's events.
    mesh = await startPolyglotMesh("polyglot", ADMIN);
    const report = await runClient(gen, mesh);
    t.diagnostic(`python ${report.runtime.python}, grpcio ${report.runtime.grpc}`);

    await checkClientReport(
      t,
      report,
      { name: "Polyglot kettle", category: "polyglot", language: "Python" },
      mesh,
    );
  } finally {
    await mesh?.stop();
    rmSync(gen, { recursive: true, force: true });
  }
});
