/**
 * The real catalog (startCatalog, its three listeners, a real database) against what
 * clients get wrong and what they may rely on: malformed protobuf, NUL characters, forged
 * page tokens, stale tokens on public methods, Connect GET, the JSON shape, field masks.
 * The kit's tests cover the same behaviour on every service's descriptors; this is the
 * check that a real service, wired as in production, behaves so.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { ViolationsSchema } from "@meshmart/kit/gen/buf/validate/validate_pb.js";
import {
  CatalogService,
  ListProductsRequestSchema,
} from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_service_pb.js";
import {
  connectCall,
  createTestDatabase,
  createTestIssuer,
  grpcCall,
  grpcWebCall,
  type TestDatabase,
  type TestIssuer,
  testRedisUrl,
} from "@meshmart/kit/testing";
import postgres from "postgres";
import { demoCatalog } from "../src/demo-catalog.js";
import { uuidFromSku } from "../src/seed.js";
import { type RunningCatalog, startTestCatalog } from "./support/catalog-server.js";

const SERVICE = "meshmart.catalog.v1.CatalogService";
const [demoProduct] = demoCatalog();
assert.ok(demoProduct);
const demoId = uuidFromSku(demoProduct.sku);
const method = (name: string) => {
  const m = CatalogService.methods.find((x) => x.name === name);
  assert.ok(m);
  return m;
};

type Json = Record<string, unknown>;

describe("catalog server, bad input and the JSON contract", () => {
  let db: TestDatabase;
  let running: RunningCatalog;
  let issuer: TestIssuer;
  let admin: string;

  before(async () => {
    issuer = await createTestIssuer();
    db = await createTestDatabase("catalog_bad_input");
    running = await startTestCatalog({
      databaseUrl: db.url,
      redisUrl: await testRedisUrl(),
      issuer,
      env: { SEED_DEMO: "true" },
    });
    admin = `Bearer ${await issuer.token({ roles: ["admin"] })}`;
  });
  after(async () => {
    await running?.stop();
    await db?.drop();
  });

  /** A Connect JSON call to the HTTP port: status and parsed body. */
  async function connect(
    name: string,
    body: unknown,
    headers: Record<string, string> = {},
  ): Promise<{ status: number; json: Json }> {
    const res = await fetch(`${running.host.httpUrl}/${SERVICE}/${name}`, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: JSON.stringify(body),
    });
    return { status: res.status, json: (await res.json()) as Json };
  }

  /** The field path of each violation in a Connect error's buf.validate.Violations detail. */
  function violationFields(json: Json): string[] {
    const details = (json.details ?? []) as { type: string; value: string }[];
    const detail = details.find((d) => d.type === "buf.validate.Violations");
    assert.ok(detail, `Violations detail in ${JSON.stringify(json)}`);
    return fromBinary(ViolationsSchema, Buffer.from(detail.value, "base64")).violations.map((v) =>
      (v.field?.elements ?? []).map((e) => e.fieldName).join("."),
    );
  }

  test("a body that is not a ListProductsRequest: INVALID_ARGUMENT on Connect, gRPC-Web and gRPC", async () => {
    const truncated = Uint8Array.from([0x12, 0x05, 0x61]); // page_token, 5 bytes promised, 1 sent
    const deep = Uint8Array.from(Array(50_000).fill(0x2b)); // field 5, start group, 50 000 deep
    for (const body of [truncated, deep]) {
      const overConnect = await connectCall(running.host.httpUrl, method("ListProducts"), body);
      assert.deepEqual([overConnect.http, overConnect.status], [400, "invalid_argument"]);
      assert.match(overConnect.message, /not a valid meshmart\.catalog\.v1\.ListProductsRequest/);
      const overWeb = await grpcWebCall(running.host.httpUrl, method("ListProducts"), body);
      assert.equal(overWeb.status, "3");
      const overGrpc = await grpcCall(running.host.grpcTarget, method("ListProducts"), body);
      assert.equal(overGrpc.status, "3");
    }
    // Still serving.
    const ok = await connectCall(
      running.host.httpUrl,
      method("ListProducts"),
      toBinary(ListProductsRequestSchema, create(ListProductsRequestSchema, { pageSize: 1 })),
    );
    assert.equal(ok.status, "ok");
  });

  test("a NUL in a string is INVALID_ARGUMENT naming the field, and nothing is written", async () => {
    const search = await connect("ListProducts", { query: "kettle\u0000" });
    assert.equal(search.status, 400);
    assert.deepEqual(violationFields(search.json), ["query"]);

    const sku = `NUL-${Date.now()}`;
    const created = await connect(
      "CreateProduct",
      {
        requestId: "nul\u0000request",
        sku,
        name: "Nul\u0000Kettle",
        category: "brewing",
        price: { currencyCode: "EUR", units: "5" },
      },
      { authorization: admin },
    );
    assert.equal(created.status, 400);
    assert.deepEqual(violationFields(created.json).sort(), ["name", "request_id"]);
    const sql = postgres(db.url, { max: 1 });
    try {
      const [row] = await sql<
        { n: string }[]
      >`select count(*)::text as n from products where sku = ${sku}`;
      assert.equal(row?.n, "0", "no product written");
    } finally {
      await sql.end();
    }
  });

  test("a forged page token is INVALID_ARGUMENT naming page_token", async () => {
    const first = await connect("ListProducts", { pageSize: 2 });
    const token = String(first.json.nextPageToken);
    assert.notEqual(token, "");
    const crafted = Buffer.from(
      JSON.stringify({ n: "~", i: "00000000-0000-4000-8000-000000000000", c: "", q: "" }),
    ).toString("base64url");
    for (const pageToken of [crafted, `${token.slice(0, -1)}${token.endsWith("A") ? "B" : "A"}`]) {
      const res = await connect("ListProducts", { pageSize: 2, pageToken });
      assert.equal(res.status, 400);
      assert.deepEqual(violationFields(res.json), ["page_token"]);
    }
    const second = await connect("ListProducts", { pageSize: 2, pageToken: token });
    assert.equal(second.status, 200);
  });

  test("a stale or invalid token on a public method is anonymous; on a write it is 401", async () => {
    const expired = await issuer.token({ roles: ["admin"], expiresIn: "-1m" });
    for (const authorization of [`Bearer ${expired}`, "Bearer not.a.jwt"]) {
      const list = await connect("ListProducts", { pageSize: 1 }, { authorization });
      assert.equal(list.status, 200);
      const get = await connect("GetProduct", { productId: demoId }, { authorization });
      assert.equal(get.status, 200);
      const write = await connect("DeleteProduct", { productId: demoId }, { authorization });
      assert.equal(write.status, 401);
    }
  });

  test("Connect GET on the read-only methods (cacheable URLs); a write refuses GET", async () => {
    const get = (name: string, message: unknown) =>
      fetch(
        `${running.host.httpUrl}/${SERVICE}/${name}?connect=v1&encoding=json&message=${encodeURIComponent(JSON.stringify(message))}`,
      );
    const product = await get("GetProduct", { productId: demoId });
    assert.equal(product.status, 200);
    assert.equal(((await product.json()) as { product: { id: string } }).product.id, demoId);
    const page = await get("ListProducts", { pageSize: 2 });
    assert.equal(page.status, 200);
    assert.equal(((await page.json()) as { products: unknown[] }).products.length, 2);
    assert.equal((await get("ListCategories", {})).status, 200);
    assert.equal((await get("DeleteProduct", { productId: demoId })).status, 405);
  });

  test("Connect JSON prints fields at their default value, as the REST edge does", async () => {
    const none = await connect("ListProducts", { query: "no-such-product-anywhere" });
    assert.deepEqual(none.json, { products: [], nextPageToken: "" });
    const { json } = await connect("GetProduct", { productId: demoId });
    const product = json.product as Json;
    for (const key of ["id", "sku", "name", "description", "category", "imageUrl", "version"]) {
      assert.ok(key in product, `product.${key} printed`);
    }
  });

  test("UpdateProduct's mask takes JSON paths (imageUrl), as the OpenAPI document says", async () => {
    const { json } = await connect("GetProduct", { productId: demoId });
    const version = String((json.product as Json).version);
    const updated = await connect(
      "UpdateProduct",
      {
        product: { id: demoId, imageUrl: "https://img.example.com/kettle.png", version },
        updateMask: "imageUrl",
      },
      { authorization: admin },
    );
    assert.equal(updated.status, 200, JSON.stringify(updated.json));
    assert.equal((updated.json.product as Json).imageUrl, "https://img.example.com/kettle.png");
    // The proto spelling is not proto3 JSON for a FieldMask: refused before any handler.
    const snake = await connect(
      "UpdateProduct",
      {
        product: { id: demoId, imageUrl: "https://img.example.com/x.png" },
        updateMask: "image_url",
      },
      { authorization: admin },
    );
    assert.equal(snake.status, 400);
    assert.equal(snake.json.code, "invalid_argument");
  });
});
