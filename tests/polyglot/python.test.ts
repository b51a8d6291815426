import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { type Mesh, startMesh } from "../support/mesh.js";

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
const SERVICES = ["identity", "catalog", "inventory", "payments", "orders"] as const;
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

interface Money {
  currencyCode: string;
  units: number;
  nanos: number;
}

interface RpcFailure {
  code: string;
  message: string;
  hasStatusDetails: boolean;
  statusCode?: number;
  statusMessage?: string;
  detailTypes: string[];
  violations: { field: string; rule: string; ruleId: string; message: string }[];
}

/** What tests/polyglot/client.py prints. */
interface ClientReport {
  runtime: { grpc: string; python: string };
  health: Record<string, string>;
  admin: { productId: string; sku: string; onHand: number };
  catalog: {
    listed: { id: string; sku: string; name: string }[];
    got: { id: string; sku: string; name: string; category: string; price: Money };
  };
  validation: RpcFailure;
  identity: {
    email: string;
    signedUpId: string;
    meId: string;
    meEmail: string;
    tokenType: string;
    hasToken: boolean;
  };
  unauthenticated: RpcFailure;
  badCard: RpcFailure;
  order: {
    id: string;
    userId: string;
    placedStatus: string;
    statuses: string[];
    status: string;
    cancelCode: string;
    cancelReason: string;
    cardLast4: string;
    total: Money;
    items: {
      productId: string;
      sku: string;
      quantity: number;
      unitPrice: Money;
      lineTotal: Money;
    }[];
    hasPaymentId: boolean;
    stockAfter: { onHand: number; available: number };
  };
}

async function runClient(gen: string, mesh: Mesh): Promise<ClientReport> {
  const address = (name: string) => `127.0.0.1:${mesh.ports(name).grpc}`;
  const config = {
    identity: address("identity"),
    catalog: address("catalog"),
    inventory: address("inventory"),
    orders: address("orders"),
    admin: ADMIN,
  };
  try {
    const { stdout } = await run(
      PYTHON,
      [join(ROOT, "tests", "polyglot", "client.py"), gen, JSON.stringify(config)],
      { cwd: ROOT, env: { ...pythonEnv, PYTHONDONTWRITEBYTECODE: "1" }, timeout: 45_000 },
    );
    return JSON.parse(stdout) as ClientReport;
  } catch (error) {
    const { stderr } = error as { stderr?: string };
    const services = SERVICES.map((s) => `--- ${s}\n${mesh.output(s)}`).join("\n");
    throw new Error(`client.py failed:\n${stderr ?? String(error)}\n${services}`);
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

    mesh = await startMesh({
      label: "polyglot",
      services: SERVICES,
      env: { SEED_DEMO: "false" },
      serviceEnv: {
        identity: {
          IDENTITY_BOOTSTRAP_ADMIN_EMAIL: ADMIN.email,
          IDENTITY_BOOTSTRAP_ADMIN_PASSWORD: ADMIN.password,
        },
        // Stock is only what the Python admin sets, not a default from catalog's events.
        inventory: { INITIAL_STOCK_ON_PRODUCT_CREATED: "0" },
      },
    });
    const report = await runClient(gen, mesh);
    t.diagnostic(`python ${report.runtime.python}, grpcio ${report.runtime.grpc}`);

    await t.test("grpc.health.v1 Check answers SERVING for each server and service", () => {
      assert.equal(Object.keys(report.health).length, 8);
      for (const [service, status] of Object.entries(report.health)) {
        assert.equal(status, "SERVING", service);
      }
    });

    await t.test("catalog reads return the product the admin created from Python", () => {
      const { productId, sku } = report.admin;
      assert.equal(report.admin.onHand, 5);
      assert.deepEqual(report.catalog.listed, [{ id: productId, sku, name: "Polyglot kettle" }]);
      assert.deepEqual(report.catalog.got, {
        id: productId,
        sku,
        name: "Polyglot kettle",
        category: "polyglot",
        price: { currencyCode: "EUR", units: 12, nanos: 500_000_000 },
      });
    });

    await t.test(
      "a validation error decodes to google.rpc.Status with buf.validate.Violations",
      () => {
        const v = report.validation;
        assert.equal(v.code, "INVALID_ARGUMENT");
        assert.ok(v.hasStatusDetails, "grpc-status-details-bin trailer present");
        assert.equal(v.statusCode, 3);
        assert.equal(v.statusMessage, v.message);
        assert.ok(v.detailTypes.includes("type.googleapis.com/buf.validate.Violations"));
        assert.equal(v.violations.length, 1);
        assert.deepEqual(
          {
            field: v.violations[0]?.field,
            rule: v.violations[0]?.rule,
            ruleId: v.violations[0]?.ruleId,
          },
          { field: "product_id", rule: "string.uuid", ruleId: "string.uuid" },
        );
        assert.ok((v.violations[0]?.message ?? "").length > 0);

        // Nested paths survive the trip: PlaceOrder.payment.card.number.
        const card = report.badCard;
        assert.equal(card.code, "INVALID_ARGUMENT");
        assert.deepEqual(
          card.violations.map((x) => [x.field, x.ruleId]),
          [["payment.card.number", "string.pattern"]],
        );
      },
    );

    await t.test("identity signs up and logs in; the token authenticates", () => {
      const id = report.identity;
      assert.ok(id.hasToken);
      assert.equal(id.tokenType, "Bearer");
      assert.equal(id.meId, id.signedUpId);
      assert.equal(id.meEmail, id.email);
      assert.equal(report.unauthenticated.code, "UNAUTHENTICATED");
    });

    await t.test("an order placed over gRPC with the good card ends CONFIRMED", () => {
      const o = report.order;
      assert.equal(o.placedStatus, "ORDER_STATUS_PENDING");
      assert.equal(
        o.status,
        "ORDER_STATUS_CONFIRMED",
        `${o.cancelCode} ${o.cancelReason}\n${mesh?.output("orders") ?? ""}`,
      );
      assert.deepEqual(o.statuses, ["ORDER_STATUS_PENDING", "ORDER_STATUS_CONFIRMED"]);
      assert.equal(o.userId, report.identity.signedUpId);
      assert.equal(o.cardLast4, "4242");
      assert.ok(o.hasPaymentId);
      // Catalog's price, twice.
      assert.deepEqual(o.items, [
        {
          productId: report.admin.productId,
          sku: report.admin.sku,
          quantity: 2,
          unitPrice: { currencyCode: "EUR", units: 12, nanos: 500_000_000 },
          lineTotal: { currencyCode: "EUR", units: 25, nanos: 0 },
        },
      ]);
      assert.deepEqual(o.total, { currencyCode: "EUR", units: 25, nanos: 0 });
      assert.deepEqual(o.stockAfter, { onHand: 3, available: 3 });
    });
  } finally {
    await mesh?.stop();
    rmSync(gen, { recursive: true, force: true });
  }
});
