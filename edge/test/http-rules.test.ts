import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  bindingsFromFiles,
  createHttpRouter,
  matchTemplate,
  PathDecodeError,
  parseTemplate,
  splitPath,
  TemplateError,
} from "../src/http-rules.js";
import { publicFiles, rpcName } from "../src/server.js";
import { binding } from "./support/synthetic.js";

describe("parseTemplate", () => {
  it("parses literals, variables, wildcards and verbs", () => {
    const t = parseTemplate("/v1/{name=shelves/*/books/**}:publish");
    assert.equal(t.verb, "publish");
    assert.deepEqual(
      t.segments.map((s) => (s.kind === "literal" ? s.value : s.kind)),
      ["v1", "shelves", "single", "books", "multi"],
    );
    assert.deepEqual(t.variables, [{ fieldPath: ["name"], start: 1, end: -1 }]);
    const nested = parseTemplate("/v1/products/{product.id}");
    assert.deepEqual(nested.variables, [{ fieldPath: ["product", "id"], start: 2, end: 3 }]);
    assert.equal(nested.verb, undefined);
  });

  for (const bad of ["v1/x", "/v1/{x", "/v1/**/x", "/v1/{a-b}", "/v1//x", "/v1/x:"]) {
    it(`rejects ${bad}`, () => assert.throws(() => parseTemplate(bad), TemplateError));
  }
});

describe("matchTemplate", () => {
  const verbs = new Set(["cancel", "refresh", "publish"]);
  const cases: [template: string, path: string, expected: Record<string, string> | undefined][] = [
    ["/v1/products", "/v1/products", {}],
    ["/v1/products", "/v1/products/x", undefined],
    ["/v1/products/{product_id}", "/v1/products/abc", { product_id: "abc" }],
    ["/v1/products/{product_id}", "/v1/products/", undefined],
    ["/v1/products/{product_id}", "/v1/products/a%20b%2Fc", { product_id: "a b/c" }],
    ["/v1/products/{product.id}", "/v1/products/p1", { "product.id": "p1" }],
    ["/v1/{name=products/*}", "/v1/products/p1", { name: "products/p1" }],
    ["/v1/{name=products/*}", "/v1/shelves/p1", undefined],
    ["/v1/{name=products/*}", "/v1/products/p1/x", undefined],
    ["/v1/{path=**}", "/v1/a/b/c", { path: "a/b/c" }],
    ["/v1/{path=**}", "/v1/a%2Fb/c%20d", { path: "a%2Fb/c d" }],
    ["/v1/files/**", "/v1/files", {}],
    ["/v1/*/items", "/v1/x/items", {}],
    ["/v1/orders/{order_id}:cancel", "/v1/orders/o1:cancel", { order_id: "o1" }],
    ["/v1/orders/{order_id}:cancel", "/v1/orders/o1", undefined],
    ["/v1/orders/{order_id}", "/v1/orders/o1:cancel", undefined],
    ["/v1/orders/{order_id}", "/v1/orders/o1:other", { order_id: "o1:other" }],
    ["/v1/sessions:refresh", "/v1/sessions:refresh", {}],
    ["/v1/sessions", "/v1/sessions:refresh", undefined],
  ];
  for (const [template, path, expected] of cases) {
    it(`${template} ~ ${path}`, () => {
      const { segments, verb } = splitPath(path, verbs);
      const got = matchTemplate(parseTemplate(template), segments, verb);
      assert.deepEqual(got === undefined ? undefined : Object.fromEntries(got), expected);
    });
  }

  it("bad percent-encoding throws PathDecodeError", () => {
    const { segments, verb } = splitPath("/v1/products/%E0%A4%A", verbs);
    assert.throws(
      () => matchTemplate(parseTemplate("/v1/products/{id}"), segments, verb),
      PathDecodeError,
    );
  });
});

describe("createHttpRouter", () => {
  const router = createHttpRouter([
    binding("GET", "/v1/{name=**}"),
    binding("GET", "/v1/products/{id}"),
    binding("GET", "/v1/products/special"),
    binding("POST", "/v1/products"),
    binding("DELETE", "/v1/products/{id}"),
  ]);
  const templateOf = (method: string, path: string) => {
    const r = router.route(method, path);
    return r.kind === "match" ? r.binding.template.source : r.kind;
  };

  it("prefers the most literal template", () => {
    assert.equal(templateOf("GET", "/v1/products/special"), "/v1/products/special");
    assert.equal(templateOf("GET", "/v1/products/p1"), "/v1/products/{id}");
    assert.equal(templateOf("GET", "/v1/anything/else"), "/v1/{name=**}");
  });

  it("405 lists the methods that do match the path", () => {
    const r = router.route("PUT", "/v1/products/p1");
    assert.equal(r.kind, "method-not-allowed");
    assert.deepEqual(r.kind === "method-not-allowed" ? r.allow.sort() : [], ["DELETE", "GET"]);
  });

  it("404 when no template matches", () => {
    assert.equal(templateOf("GET", "/v2/products"), "not-found");
  });
});

describe("the public services' rules", () => {
  const router = createHttpRouter(bindingsFromFiles(publicFiles));
  const rpc = (method: string, path: string) => {
    const r = router.route(method, path);
    return r.kind === "match" ? [rpcName(r.binding), Object.fromEntries(r.variables)] : r.kind;
  };
  const cases: [string, string, unknown][] = [
    ["GET", "/v1/products", ["meshmart.catalog.v1.CatalogService.ListProducts", {}]],
    [
      "GET",
      "/v1/products/p1",
      ["meshmart.catalog.v1.CatalogService.GetProduct", { product_id: "p1" }],
    ],
    [
      "PATCH",
      "/v1/products/p1",
      ["meshmart.catalog.v1.CatalogService.UpdateProduct", { "product.id": "p1" }],
    ],
    ["POST", "/v1/sessions", ["meshmart.identity.v1.IdentityService.Login", {}]],
    ["POST", "/v1/sessions:refresh", ["meshmart.identity.v1.IdentityService.RefreshToken", {}]],
    ["POST", "/v1/sessions:logout", ["meshmart.identity.v1.IdentityService.Logout", {}]],
    ["GET", "/v1/users/me", ["meshmart.identity.v1.IdentityService.GetMe", {}]],
    ["GET", "/v1/me", ["meshmart.identity.v1.IdentityService.GetMe", {}]],
    [
      "POST",
      "/v1/users/u1:grantRole",
      ["meshmart.identity.v1.IdentityService.GrantRole", { user_id: "u1" }],
    ],
    ["GET", "/.well-known/jwks.json", ["meshmart.identity.v1.IdentityService.GetJwks", {}]],
    [
      "POST",
      "/v1/orders/o1:cancel",
      ["meshmart.orders.v1.OrderService.CancelOrder", { order_id: "o1" }],
    ],
    ["GET", "/v1/orders/o1", ["meshmart.orders.v1.OrderService.GetOrder", { order_id: "o1" }]],
    [
      "GET",
      "/v1/notifications",
      ["meshmart.notifications.v1.NotificationService.ListNotifications", {}],
    ],
    ["PUT", "/v1/products/p1", "method-not-allowed"],
    ["GET", "/v1/nothing", "not-found"],
  ];
  for (const [method, path, expected] of cases) {
    it(`${method} ${path}`, () => assert.deepEqual(rpc(method, path), expected));
  }
});
