import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { test } from "node:test";
import { SERVICES } from "../scripts/lib/services.js";
import { toolPath } from "../scripts/lib/tools.js";
import { type Mesh, startMesh } from "./support/mesh.js";

// grpcurl (pinned, from `make tools`) against every service of a running mesh, through server
// reflection alone: no proto file is passed, so whatever it prints came from the servers.
// This is what the README tells people to type.

/** The gRPC service each process registers, by process name. */
const SERVICE_NAMES: Record<string, string> = {
  identity: "meshmart.identity.v1.IdentityService",
  catalog: "meshmart.catalog.v1.CatalogService",
  inventory: "meshmart.inventory.v1.InventoryService",
  payments: "meshmart.payments.v1.PaymentService",
  orders: "meshmart.orders.v1.OrderService",
  notifications: "meshmart.notifications.v1.NotificationService",
};

interface Run {
  /** grpcurl's exit status: 0, or 64 + the gRPC status code when the RPC failed. */
  code: number;
  stdout: string;
  stderr: string;
}

function grpcurl(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    execFile(
      toolPath("grpcurl"),
      ["-plaintext", "-connect-timeout", "5", "-max-time", "20", ...args],
      // No proxy variables: grpc-go would route through an http(s)_proxy otherwise.
      { env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/" }, timeout: 30_000 },
      (error, stdout, stderr) => {
        if (error !== null && typeof error.code !== "number") reject(error);
        else resolve({ code: error === null ? 0 : Number(error.code), stdout, stderr });
      },
    );
  });
}

/** A call that must succeed; its JSON answer. */
async function ok<T>(args: string[]): Promise<T> {
  const r = await grpcurl(args);
  assert.equal(r.code, 0, `grpcurl ${args.join(" ")}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

test("grpcurl lists, describes and calls every service through reflection", async (t) => {
  toolPath("grpcurl"); // a clear "run `make tools`" before anything starts
  let mesh: Mesh | undefined;
  try {
    mesh = await startMesh({ label: "grpcurl" });
    const running = mesh;
    const at = (name: string) => `127.0.0.1:${running.ports(name).grpc}`;

    await t.test("list shows each server's service and grpc.health.v1.Health", async () => {
      assert.deepEqual(
        SERVICES.map((s) => s.name),
        Object.keys(SERVICE_NAMES),
      );
      for (const [name, service] of Object.entries(SERVICE_NAMES)) {
        const r = await grpcurl([at(name), "list"]);
        assert.equal(r.code, 0, `${name}: ${r.stderr}`);
        const listed = r.stdout.trim().split("\n");
        assert.ok(listed.includes(service), `${name} lists ${service}: ${r.stdout}`);
        assert.ok(listed.includes("grpc.health.v1.Health"), `${name}: ${r.stdout}`);
      }
      const methods = await grpcurl([at("catalog"), "list", SERVICE_NAMES.catalog as string]);
      assert.ok(
        methods.stdout.split("\n").includes("meshmart.catalog.v1.CatalogService.GetProduct"),
        methods.stdout,
      );
    });

    await t.test("describe prints a method's signature, streaming included", async () => {
      const r = await grpcurl([
        at("orders"),
        "describe",
        "meshmart.orders.v1.OrderService.WatchOrder",
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /meshmart\.orders\.v1\.OrderService\.WatchOrder is a method:/);
      assert.match(
        r.stdout,
        /rpc WatchOrder \( \.meshmart\.orders\.v1\.WatchOrderRequest \) returns \( stream \.meshmart\.orders\.v1\.WatchOrderResponse \)/,
      );
      const message = await grpcurl([
        at("catalog"),
        "describe",
        "meshmart.catalog.v1.GetProductRequest",
      ]);
      assert.match(message.stdout, /message GetProductRequest \{\s+string product_id = 1;/);
    });

    await t.test(
      "grpc.health.v1.Health/Check answers SERVING, overall and per service",
      async () => {
        for (const [name, service] of Object.entries(SERVICE_NAMES)) {
          for (const asked of ["", service]) {
            const reply = await ok<{ status: string }>([
              "-d",
              JSON.stringify({ service: asked }),
              at(name),
              "grpc.health.v1.Health/Check",
            ]);
            assert.equal(reply.status, "SERVING", `${name} "${asked}"`);
          }
        }
      },
    );

    await t.test("calls with -d, and with -H for a token got through grpcurl itself", async () => {
      const page = await ok<{ products: { id: string; sku: string }[] }>([
        "-d",
        '{"page_size": 2}',
        at("catalog"),
        "meshmart.catalog.v1.CatalogService/ListProducts",
      ]);
      assert.equal(page.products.length, 2, "the demo catalog is seeded");

      const email = `grpcurl-${randomUUID()}@example.com`;
      const password = "correct horse battery staple";
      const identity = at("identity");
      const signedUp = await ok<{ user: { id: string } }>([
        "-d",
        JSON.stringify({ email, password, display_name: "Curl" }),
        identity,
        "meshmart.identity.v1.IdentityService/SignUp",
      ]);
      const login = await ok<{ accessToken: string; tokenType: string }>([
        "-d",
        JSON.stringify({ email, password }),
        identity,
        "meshmart.identity.v1.IdentityService/Login",
      ]);
      assert.equal(login.tokenType, "Bearer");
      const me = await ok<{ user: { id: string; email: string } }>([
        "-H",
        `authorization: Bearer ${login.accessToken}`,
        "-d",
        "{}",
        identity,
        "meshmart.identity.v1.IdentityService/GetMe",
      ]);
      assert.deepEqual(me.user.id, signedUp.user.id);
      assert.equal(me.user.email, email);

      // The same call on another service with the same token; and without one it is refused.
      const orders = await ok<{ orders?: unknown[] }>([
        "-H",
        `authorization: Bearer ${login.accessToken}`,
        "-d",
        "{}",
        at("orders"),
        "meshmart.orders.v1.OrderService/ListOrders",
      ]);
      assert.deepEqual(orders.orders ?? [], []);
      const anonymous = await grpcurl([
        "-d",
        "{}",
        at("orders"),
        "meshmart.orders.v1.OrderService/ListOrders",
      ]);
      assert.equal(anonymous.code, 64 + 16, anonymous.stderr);
      assert.match(anonymous.stderr, /Code: Unauthenticated/);
    });

    await t.test("an error shows its status details: the field violation", async () => {
      const args = [
        "-d",
        '{"product_id": "not-a-uuid"}',
        at("catalog"),
        "meshmart.catalog.v1.CatalogService/GetProduct",
      ];
      // Default output: the details decoded (buf.validate.Violations comes from reflection).
      const text = await grpcurl(args);
      assert.equal(text.code, 64 + 3, text.stderr);
      assert.match(text.stderr, /Code: InvalidArgument/);
      assert.match(text.stderr, /"@type": "type\.googleapis\.com\/buf\.validate\.Violations"/);

      // -format-error: the google.rpc.Status as JSON.
      const json = await grpcurl(["-format-error", ...args]);
      assert.equal(json.code, 64 + 3, json.stderr);
      const status = JSON.parse(json.stderr) as {
        code: number;
        message: string;
        details: {
          "@type": string;
          violations: {
            ruleId: string;
            message: string;
            field: { elements: { fieldName: string }[] };
          }[];
        }[];
      };
      assert.equal(status.code, 3);
      assert.match(status.message, /product_id/);
      const [detail] = status.details;
      assert.equal(detail?.["@type"], "type.googleapis.com/buf.validate.Violations");
      assert.deepEqual(
        detail?.violations.map((v) => [
          v.field.elements.map((e) => e.fieldName).join("."),
          v.ruleId,
        ]),
        [["product_id", "string.uuid"]],
      );
      assert.ok((detail?.violations[0]?.message ?? "").length > 0);
    });
  } finally {
    await mesh?.stop();
  }
});
