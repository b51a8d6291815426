/**
 * What every polyglot client (tests/polyglot/client.py, tests/polyglot/go/main.go) does and
 * reports, and the checks its report must pass: the same mesh, the same configuration
 * handed to the client, the same JSON report, whatever the language.
 */
import assert from "node:assert/strict";
import type { TestContext } from "node:test";
import { type Mesh, startMesh } from "../../support/mesh.js";

/** The services a polyglot client calls. */
export const POLYGLOT_SERVICES = [
  "identity",
  "catalog",
  "inventory",
  "payments",
  "orders",
] as const;

/** google.type.Money as the clients print it. */
export interface Money {
  currencyCode: string;
  units: number;
  nanos: number;
}

/** A failed call as the clients print it, with its decoded status details. */
export interface RpcFailure {
  code: string;
  message: string;
  hasStatusDetails: boolean;
  statusCode?: number;
  statusMessage?: string;
  detailTypes: string[];
  violations: { field: string; rule: string; ruleId: string; message: string }[];
}

/** An order the client placed and followed. */
export interface OrderReport {
  id: string;
  userId: string;
  placedStatus: string;
  statuses: string[];
  status: string;
  cancelCode: string;
  cancelReason: string;
  cardLast4: string;
  total: Money;
  items: { productId: string; sku: string; quantity: number; unitPrice: Money; lineTotal: Money }[];
  hasPaymentId: boolean;
  stockAfter: { onHand: number; available: number };
}

/** The report every client prints; `Runtime` and `Extra` are the language's own parts. */
export type ClientReport<Runtime, Extra = object> = {
  runtime: Runtime;
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
  order: OrderReport;
} & Extra;

/** The admin a client signs in as to create its product. */
export interface PolyglotAdmin {
  email: string;
  password: string;
}

/** The mesh a client runs against: no demo data; stock only what the client's admin sets. */
export function startPolyglotMesh(label: string, admin: PolyglotAdmin): Promise<Mesh> {
  return startMesh({
    label,
    services: POLYGLOT_SERVICES,
    env: { SEED_DEMO: "false" },
    serviceEnv: {
      identity: {
        IDENTITY_BOOTSTRAP_ADMIN_EMAIL: admin.email,
        IDENTITY_BOOTSTRAP_ADMIN_PASSWORD: admin.password,
      },
      inventory: { INITIAL_STOCK_ON_PRODUCT_CREATED: "0" },
    },
  });
}

/** The JSON a client takes as its one argument: where each service is, and the admin. */
export function clientConfig(mesh: Mesh, admin: PolyglotAdmin): string {
  const address = (name: string) => `127.0.0.1:${mesh.ports(name).grpc}`;
  return JSON.stringify({
    identity: address("identity"),
    catalog: address("catalog"),
    inventory: address("inventory"),
    orders: address("orders"),
    admin,
  });
}

/** Every service's last output lines, for a failing client's error. */
export function meshOutput(mesh: Mesh): string {
  return POLYGLOT_SERVICES.map((s) => `--- ${s}\n${mesh.output(s)}`).join("\n");
}

/** The product each client creates costs this; an order of two costs {@link ORDER_TOTAL}. */
export const UNIT_PRICE: Money = { currencyCode: "EUR", units: 12, nanos: 500_000_000 };
const ORDER_TOTAL: Money = { currencyCode: "EUR", units: 25, nanos: 0 };

/**
 * The subtests every client's report must pass: health, the catalog reads of the product it
 * created (`product`: its name and category), the validation errors with their details,
 * sign-up and login, and its good-card order ending CONFIRMED.
 */
export async function checkClientReport(
  t: TestContext,
  report: ClientReport<unknown>,
  product: { name: string; category: string; language: string },
  mesh: Mesh,
): Promise<void> {
  await t.test("grpc.health.v1 Check answers SERVING for each server and service", () => {
    assert.deepEqual(Object.keys(report.health).sort(), [
      "catalog",
      "catalog/meshmart.catalog.v1.CatalogService",
      "identity",
      "identity/meshmart.identity.v1.IdentityService",
      "inventory",
      "inventory/meshmart.inventory.v1.InventoryService",
      "orders",
      "orders/meshmart.orders.v1.OrderService",
    ]);
    for (const [service, status] of Object.entries(report.health)) {
      assert.equal(status, "SERVING", service);
    }
  });

  await t.test(
    `catalog reads return the product the admin created from ${product.language}`,
    () => {
      const { productId, sku } = report.admin;
      assert.equal(report.admin.onHand, 5);
      assert.deepEqual(report.catalog.listed, [{ id: productId, sku, name: product.name }]);
      assert.deepEqual(report.catalog.got, {
        id: productId,
        sku,
        name: product.name,
        category: product.category,
        price: UNIT_PRICE,
      });
    },
  );

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
      const [first] = v.violations;
      assert.deepEqual(
        { field: first?.field, rule: first?.rule, ruleId: first?.ruleId },
        { field: "product_id", rule: "string.uuid", ruleId: "string.uuid" },
      );
      assert.ok((first?.message ?? "").length > 0);

      // Nested paths survive the trip: PlaceOrder.payment.card.number.
      assert.equal(report.badCard.code, "INVALID_ARGUMENT");
      assert.deepEqual(
        report.badCard.violations.map((x) => [x.field, x.ruleId]),
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
      `${o.cancelCode} ${o.cancelReason}\n${mesh.output("orders")}`,
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
        unitPrice: UNIT_PRICE,
        lineTotal: ORDER_TOTAL,
      },
    ]);
    assert.deepEqual(o.total, ORDER_TOTAL);
    assert.deepEqual(o.stockAfter, { onHand: 3, available: 3 });
  });
}
