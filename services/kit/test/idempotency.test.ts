/**
 * Read-only methods say so in the proto (idempotency_level = NO_SIDE_EFFECTS): Connect
 * clients may then call them with GET (cacheable URLs), and the mesh may retry them. The
 * call graph, which the retry policies are generated from, must agree.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, test } from "node:test";
import { create, toJsonString } from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { ListProductsRequestSchema } from "../gen/meshmart/catalog/v1/catalog_service_pb.js";
import { startTestHost, type TestHost } from "../src/testing/host.js";
import { EVERY_METHOD, stubRoutes } from "./support/every-service.js";

/** The methods that only read: decided per method from what each handler does. */
const READ_ONLY = [
  "IdentityService.GetMe",
  "IdentityService.GetJwks",
  "CatalogService.GetProduct",
  "CatalogService.ListProducts",
  "CatalogService.ListCategories",
  "InventoryService.GetStock",
  "InventoryService.GetReservation",
  "PaymentService.GetPayment",
  "OrderService.GetOrder",
  "OrderService.ListOrders",
  "NotificationService.ListNotifications",
];

const name = (m: (typeof EVERY_METHOD)[number]) => `${m.parent.name}.${m.name}`;

test("exactly the read-only unary methods declare NO_SIDE_EFFECTS", () => {
  const declared = EVERY_METHOD.filter(
    (m) => m.idempotency === MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS,
  ).map(name);
  assert.deepEqual(declared.sort(), [...READ_ONLY].sort());
  for (const m of EVERY_METHOD.filter((x) => READ_ONLY.includes(name(x)))) {
    // Connect GET is for unary methods; WatchOrder streams, so it is not among them.
    assert.equal(m.methodKind, "unary", name(m));
  }
});

test("the call graph marks every method with a declared idempotency level idempotent", async () => {
  const { loadCallGraph, resolveCallGraph } = await import("../../../scripts/deploy/callgraph.js");
  const graph = loadCallGraph();
  for (const m of EVERY_METHOD) {
    if (m.idempotency === MethodOptions_IdempotencyLevel.IDEMPOTENCY_UNKNOWN) continue;
    const svc = [...graph.services.values()].find((s) => s.grpcService === m.parent.typeName);
    if (svc === undefined) continue; // the kit's echo service is not deployed
    assert.equal(svc.methods.get(m.name)?.idempotent, true, `${name(m)} in deploy/callgraph.yaml`);
  }
  // And loading the graph refuses one that contradicts a proto.
  const { parse } = await import("yaml");
  const raw = parse(
    readFileSync(new URL("../../../deploy/callgraph.yaml", import.meta.url), "utf8"),
  ) as { services: { catalog: { methods: Record<string, { idempotent: boolean }> } } };
  const getProduct = raw.services.catalog.methods.GetProduct;
  assert.ok(getProduct);
  getProduct.idempotent = false;
  assert.throws(() => resolveCallGraph(raw as never), /GetProduct.*NO_SIDE_EFFECTS/);
});

let host: TestHost;
before(async () => {
  host = await startTestHost({ routes: stubRoutes([]) });
});
after(() => host?.close());

test("Connect GET serves a NO_SIDE_EFFECTS method and refuses anything else", async () => {
  const message = encodeURIComponent(
    toJsonString(ListProductsRequestSchema, create(ListProductsRequestSchema, { pageSize: 3 })),
  );
  const get = (method: string) =>
    fetch(
      `${host.httpUrl}/meshmart.catalog.v1.CatalogService/${method}?connect=v1&encoding=json&message=${message}`,
    );
  const ok = await get("ListProducts");
  assert.equal(ok.status, 200);
  assert.deepEqual(await ok.json(), { products: [], nextPageToken: "" });
  assert.equal((await get("DeleteProduct")).status, 405);
});
