import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import {
  type CreateProductRequest,
  CreateProductRequestSchema,
} from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_service_pb.js";
import {
  type CatalogFixture,
  createCatalogFixture,
  productRow,
  rejection,
  violationsOf,
} from "./support/catalog-fixture.js";

// Every CatalogService RPC, in memory through the production interceptor chain
// (validation, auth, errors), against a real database and a real Redis.
let f: CatalogFixture;

before(async () => {
  f = await createCatalogFixture("catalog_handlers");
});
after(() => f?.close());

const uniqueSku = (tag: string) => `${tag}-${randomBytes(4).toString("hex").toUpperCase()}`;

/** The fields of a CreateProductRequest; `price: undefined` leaves the price out. */
interface CreateFields {
  requestId: string;
  sku: string;
  name: string;
  description: string;
  category: string;
  price: { currencyCode: string; units: bigint; nanos?: number } | undefined;
}

function createRequest(overrides: Partial<CreateFields> = {}): CreateProductRequest {
  const { price, ...fields }: CreateFields = {
    requestId: randomUUID(),
    sku: uniqueSku("KTL"),
    name: "Pour-over Kettle",
    description: "Gooseneck, 1 l.",
    category: "brewing",
    price: { currencyCode: "EUR", units: 49n, nanos: 900_000_000 },
    ...overrides,
  };
  return create(CreateProductRequestSchema, price === undefined ? fields : { ...fields, price });
}

async function rowsWithSku(sku: string): Promise<number> {
  const [row] = await f.sql<{ n: bigint }[]>`select count(*) as n from products where sku = ${sku}`;
  return Number(row?.n);
}

describe("GetProduct", () => {
  test("returns a stored product", async () => {
    const row = productRow({ sku: uniqueSku("GET"), name: "Stored Mug", price_nanos: 250_000_000 });
    await f.store.insertMissing([row]);
    const { product } = await f.client.getProduct({ productId: row.id });
    assert.equal(product?.id, row.id);
    assert.equal(product?.sku, row.sku);
    assert.equal(product?.name, "Stored Mug");
    assert.deepEqual(
      {
        currency: product?.price?.currencyCode,
        units: product?.price?.units,
        nanos: product?.price?.nanos,
      },
      { currency: "EUR", units: 10n, nanos: 250_000_000 },
    );
    assert.equal(product?.version, 1n);
    assert.ok(product?.createTime, "create_time set");
  });

  test("an unknown id is NOT_FOUND", async () => {
    const err = await rejection(f.client.getProduct({ productId: randomUUID() }));
    assert.equal(err.code, Code.NotFound);
  });

  test("a malformed id is INVALID_ARGUMENT naming product_id", async () => {
    const err = await rejection(f.client.getProduct({ productId: "not-a-uuid" }));
    assert.deepEqual(violationsOf(err), [{ path: "product_id", rule: "string.uuid" }]);
  });
});

describe("ListProducts", () => {
  // 20 widgets plus 8 products sharing one name: with page_size 7 the tie group spans a
  // page boundary, which only a (name, id) cursor walks without skipping or repeating.
  const widgets = Array.from({ length: 20 }, (_, i) =>
    productRow({
      sku: uniqueSku(`WDG${i}`),
      name: `Widget ${String(i).padStart(2, "0")}`,
      category: "gadgets",
      description: i % 5 === 0 ? "Shaped like a zeppelin." : "A plain widget.",
    }),
  );
  const twins = Array.from({ length: 8 }, (_, i) =>
    productRow({ sku: uniqueSku(`TWN${i}`), name: "Twin Lamp", category: "lighting" }),
  );

  before(async () => {
    assert.equal(await f.store.insertMissing([...widgets, ...twins]), 28);
  });

  async function walk(request: { category?: string; query?: string; pageSize: number }) {
    const ids: string[] = [];
    const sizes: number[] = [];
    let pageToken = "";
    for (let pages = 0; pages < 100; pages++) {
      const res = await f.client.listProducts({ ...request, pageToken });
      sizes.push(res.products.length);
      ids.push(...res.products.map((p) => p.id));
      if (res.nextPageToken === "") return { ids, sizes };
      pageToken = res.nextPageToken;
    }
    assert.fail("pagination did not end");
  }

  test("page_size 7 walks every product exactly once, in (name, id) order", async () => {
    const expected = (await f.sql<{ id: string }[]>`select id from products order by name, id`).map(
      (r) => r.id,
    );
    assert.ok(expected.length >= 28);
    const { ids, sizes } = await walk({ pageSize: 7 });
    assert.equal(new Set(ids).size, ids.length, "no product repeated");
    assert.deepEqual(ids, expected, "every product, in stable order");
    assert.ok(
      sizes.slice(0, -1).every((n) => n === 7),
      `full pages: ${sizes}`,
    );
    for (const twin of twins) assert.ok(ids.includes(twin.id), "every same-named product listed");
    // A second walk gives the same sequence.
    assert.deepEqual((await walk({ pageSize: 7 })).ids, expected);
  });

  test("page_size 0 means 20", async () => {
    const res = await f.client.listProducts({});
    assert.equal(res.products.length, 20);
    assert.notEqual(res.nextPageToken, "");
  });

  test("category filter returns only that category, across pages", async () => {
    const { ids } = await walk({ category: "lighting", pageSize: 3 });
    assert.deepEqual(new Set(ids), new Set(twins.map((t) => t.id)));
    assert.equal(ids.length, twins.length);
  });

  test("query matches words of the description (full text)", async () => {
    const { ids } = await walk({ query: "zeppelin", pageSize: 2 });
    const expected = widgets.filter((w) => w.description.includes("zeppelin")).map((w) => w.id);
    assert.equal(expected.length, 4);
    assert.deepEqual(new Set(ids), new Set(expected));
  });

  test("query matches a substring of the name", async () => {
    const { ids } = await walk({ query: "idge", pageSize: 50 });
    assert.deepEqual(new Set(ids), new Set(widgets.map((w) => w.id)));
  });

  test("query combines with category", async () => {
    const { ids } = await walk({ query: "lamp", category: "gadgets", pageSize: 50 });
    assert.deepEqual(ids, []);
  });

  test("LIKE wildcards in the query are literal", async () => {
    const { ids } = await walk({ query: "%", pageSize: 50 });
    assert.deepEqual(ids, []);
  });

  test("a page token from other filters is INVALID_ARGUMENT", async () => {
    const first = await f.client.listProducts({ category: "gadgets", pageSize: 5 });
    assert.notEqual(first.nextPageToken, "");
    const otherCategory = await rejection(
      f.client.listProducts({ category: "lighting", pageSize: 5, pageToken: first.nextPageToken }),
    );
    assert.equal(otherCategory.code, Code.InvalidArgument);
    const otherQuery = await rejection(
      f.client.listProducts({
        category: "gadgets",
        query: "zeppelin",
        pageSize: 5,
        pageToken: first.nextPageToken,
      }),
    );
    assert.equal(otherQuery.code, Code.InvalidArgument);
    // With its own filters the token continues where the first page ended.
    const second = await f.client.listProducts({
      category: "gadgets",
      pageSize: 5,
      pageToken: first.nextPageToken,
    });
    assert.equal(second.products[0]?.name, "Widget 05");
  });

  test("a garbage page token is INVALID_ARGUMENT", async () => {
    for (const pageToken of ["garbage!!", Buffer.from('{"n":"x","i":"1"}').toString("base64url")]) {
      const err = await rejection(f.client.listProducts({ pageToken }));
      assert.equal(err.code, Code.InvalidArgument, `token ${pageToken}`);
    }
  });

  test("a well-formed page token the service never issued is INVALID_ARGUMENT naming page_token", async () => {
    const first = await f.client.listProducts({ category: "gadgets", pageSize: 5 });
    const issued = first.nextPageToken;
    assert.notEqual(issued, "");
    // A client that guessed the format (base64url JSON of the last row and the filters)
    // and wrote its own cursor: past a product it never saw.
    const [skipTo] = await f.sql<{ id: string; name: string }[]>`
      select id, name from products where category = 'gadgets' order by name desc, id desc limit 1`;
    assert.ok(skipTo);
    const crafted = Buffer.from(
      JSON.stringify({ n: skipTo.name, i: skipTo.id, c: "gadgets", q: "" }),
    ).toString("base64url");
    // The issued token with one character changed.
    const at = Math.floor(issued.length / 2);
    const altered = `${issued.slice(0, at)}${issued[at] === "A" ? "B" : "A"}${issued.slice(at + 1)}`;
    for (const pageToken of [crafted, altered, `${issued}x`]) {
      const err = await rejection(
        f.client.listProducts({ category: "gadgets", pageSize: 5, pageToken }),
      );
      assert.deepEqual(
        violationsOf(err).map((v) => v.path),
        ["page_token"],
        `token ${pageToken}`,
      );
    }
  });

  test("page_size over 100 is INVALID_ARGUMENT naming page_size", async () => {
    const err = await rejection(f.client.listProducts({ pageSize: 101 }));
    assert.deepEqual(violationsOf(err), [{ path: "page_size", rule: "int32.gte_lte" }]);
    const largest = await f.client.listProducts({ pageSize: 100 });
    assert.ok(largest.products.length >= 28 && largest.products.length <= 100);
  });
});

describe("CreateProduct", () => {
  test("without a token is UNAUTHENTICATED, as a customer PERMISSION_DENIED; nothing is stored", async () => {
    const req = createRequest();
    assert.equal((await rejection(f.client.createProduct(req))).code, Code.Unauthenticated);
    assert.equal(
      (await rejection(f.client.createProduct(req, f.customer))).code,
      Code.PermissionDenied,
    );
    assert.equal(await rowsWithSku(req.sku), 0);
  });

  test("an admin creates a product at version 1, readable at once", async () => {
    const req = createRequest();
    const { product } = await f.client.createProduct(req, f.admin);
    assert.ok(product);
    assert.match(product.id, /^[0-9a-f-]{36}$/);
    assert.equal(product.sku, req.sku);
    assert.equal(product.name, req.name);
    assert.equal(product.category, "brewing");
    assert.equal(product.price?.units, 49n);
    assert.equal(product.price?.nanos, 900_000_000);
    assert.equal(product.version, 1n);
    const read = await f.client.getProduct({ productId: product.id });
    assert.equal(read.product?.sku, req.sku);
  });

  test("a retry with the same request_id and body returns the same product, stored once", async () => {
    const req = createRequest();
    const first = await f.client.createProduct(req, f.admin);
    const retry = await f.client.createProduct(req, f.admin);
    assert.equal(retry.product?.id, first.product?.id);
    assert.equal(retry.product?.version, 1n);
    assert.equal(await rowsWithSku(req.sku), 1);
  });

  test("concurrent retries of one request create one product", async () => {
    const req = createRequest();
    const results = await Promise.all(
      Array.from({ length: 5 }, () => f.client.createProduct(req, f.admin)),
    );
    assert.equal(new Set(results.map((r) => r.product?.id)).size, 1);
    assert.equal(await rowsWithSku(req.sku), 1);
  });

  test("the same request_id with a different body is FAILED_PRECONDITION", async () => {
    const req = createRequest();
    const { product } = await f.client.createProduct(req, f.admin);
    const err = await rejection(
      f.client.createProduct({ ...req, name: "Another Kettle" }, f.admin),
    );
    assert.equal(err.code, Code.FailedPrecondition);
    const read = await f.client.getProduct({ productId: product?.id ?? "" });
    assert.equal(read.product?.name, req.name, "the first product is untouched");
  });

  test("a taken SKU is ALREADY_EXISTS, and the request_id stays usable", async () => {
    const taken = createRequest();
    await f.client.createProduct(taken, f.admin);
    const clash = createRequest({ sku: taken.sku });
    const err = await rejection(f.client.createProduct(clash, f.admin));
    assert.equal(err.code, Code.AlreadyExists);
    assert.equal(await rowsWithSku(taken.sku), 1);
    // The failed attempt did not claim its request_id: a corrected retry succeeds.
    const corrected = await f.client.createProduct({ ...clash, sku: uniqueSku("FIX") }, f.admin);
    assert.equal(corrected.product?.version, 1n);
  });

  const invalid: [string, Partial<CreateFields>, string, string][] = [
    ["a malformed sku", { sku: "bad sku" }, "sku", "string.pattern"],
    ["a missing price", { price: undefined }, "price", "required"],
    [
      "a malformed currency code",
      { price: { currencyCode: "eur", units: 1n } },
      "price.currency_code",
      "string.pattern",
    ],
    [
      "a negative price",
      { price: { currencyCode: "EUR", units: -5n } },
      "price",
      "price.non_negative",
    ],
    ["an empty name", { name: "" }, "name", "string.min_len"],
    ["an empty request_id", { requestId: "" }, "request_id", "string.min_len"],
  ];
  for (const [what, overrides, path, rule] of invalid) {
    test(`${what} is INVALID_ARGUMENT naming ${path}`, async () => {
      const req = createRequest(overrides);
      const err = await rejection(f.client.createProduct(req, f.admin));
      assert.deepEqual(violationsOf(err), [{ path, rule }]);
      assert.equal(await rowsWithSku(req.sku), 0);
    });
  }
});

describe("UpdateProduct", () => {
  async function created() {
    const { product } = await f.client.createProduct(createRequest(), f.admin);
    assert.ok(product);
    return product;
  }

  test("changes only the fields named by the mask and bumps the version", async () => {
    const before = await created();
    const { product } = await f.client.updateProduct(
      {
        product: {
          id: before.id,
          name: "Renamed Kettle",
          description: "not in the mask",
          category: "not-in-the-mask",
          price: { currencyCode: "USD", units: 1n },
        },
        updateMask: { paths: ["name"] },
      },
      f.admin,
    );
    assert.equal(product?.name, "Renamed Kettle");
    assert.equal(product?.version, 2n);
    assert.equal(product?.description, before.description);
    assert.equal(product?.category, before.category);
    assert.deepEqual(product?.price, before.price);
    assert.equal(product?.sku, before.sku);
    const [row] = await f.sql<{ name: string; description: string; version: bigint }[]>`
      select name, description, version from products where id = ${before.id}`;
    assert.deepEqual(row, { name: "Renamed Kettle", description: before.description, version: 2n });
  });

  test("price and description change together when both are named", async () => {
    const before = await created();
    const { product } = await f.client.updateProduct(
      {
        product: {
          id: before.id,
          description: "Now with a thermometer.",
          price: { currencyCode: "EUR", units: 59n, nanos: 0 },
        },
        updateMask: { paths: ["price", "description"] },
      },
      f.admin,
    );
    assert.equal(product?.description, "Now with a thermometer.");
    assert.equal(product?.price?.units, 59n);
    assert.equal(product?.price?.nanos, 0);
    assert.equal(product?.name, before.name);
  });

  test("a stale product.version is ABORTED and changes nothing; the current one applies", async () => {
    const before = await created();
    await f.client.updateProduct(
      { product: { id: before.id, name: "First Edit" }, updateMask: { paths: ["name"] } },
      f.admin,
    );
    const err = await rejection(
      f.client.updateProduct(
        {
          product: { id: before.id, name: "Lost Edit", version: 1n },
          updateMask: { paths: ["name"] },
        },
        f.admin,
      ),
    );
    assert.equal(err.code, Code.Aborted);
    const read = await f.client.getProduct({ productId: before.id });
    assert.equal(read.product?.name, "First Edit");
    assert.equal(read.product?.version, 2n);
    const ok = await f.client.updateProduct(
      {
        product: { id: before.id, name: "Second Edit", version: 2n },
        updateMask: { paths: ["name"] },
      },
      f.admin,
    );
    assert.equal(ok.product?.version, 3n);
  });

  test("a retried update (same values, same expected version) succeeds without a second bump", async () => {
    const before = await created();
    const request = {
      product: {
        id: before.id,
        name: "Retried Edit",
        price: { currencyCode: "USD", units: 7n, nanos: 500_000_000 },
        version: 1n,
      },
      updateMask: { paths: ["name", "price"] },
    };
    const first = await f.client.updateProduct(request, f.admin);
    assert.equal(first.product?.version, 2n);
    // The retry still says "at version 1": an idempotent retry must not be ABORTED.
    const retry = await f.client.updateProduct(request, f.admin);
    assert.equal(retry.product?.version, 2n);
    assert.equal(retry.product?.name, "Retried Edit");
    assert.equal(retry.product?.price?.units, 7n);
    // A different change at the stale version is still refused.
    const err = await rejection(
      f.client.updateProduct(
        { ...request, product: { ...request.product, name: "Other Edit" } },
        f.admin,
      ),
    );
    assert.equal(err.code, Code.Aborted);
  });

  test("an unknown product is NOT_FOUND, with or without a version", async () => {
    for (const version of [0n, 4n]) {
      const err = await rejection(
        f.client.updateProduct(
          {
            product: { id: randomUUID(), name: "Ghost", version },
            updateMask: { paths: ["name"] },
          },
          f.admin,
        ),
      );
      assert.equal(err.code, Code.NotFound, `version ${version}`);
    }
  });

  test("a mask path outside the updatable fields is INVALID_ARGUMENT naming update_mask", async () => {
    const before = await created();
    for (const path of ["version", "id", "create_time"]) {
      const err = await rejection(
        f.client.updateProduct(
          { product: { id: before.id, version: 9n }, updateMask: { paths: [path] } },
          f.admin,
        ),
      );
      const violations = violationsOf(err);
      assert.ok(
        violations.some((v) => v.path === "update_mask"),
        `${path}: ${JSON.stringify(violations)}`,
      );
    }
    const read = await f.client.getProduct({ productId: before.id });
    assert.equal(read.product?.version, 1n);
  });

  test("a taken SKU is ALREADY_EXISTS", async () => {
    const [a, b] = [await created(), await created()];
    const err = await rejection(
      f.client.updateProduct(
        { product: { id: a.id, sku: b.sku }, updateMask: { paths: ["sku"] } },
        f.admin,
      ),
    );
    assert.equal(err.code, Code.AlreadyExists);
  });

  test("requires role admin", async () => {
    const before = await created();
    const req = { product: { id: before.id, name: "Hijack" }, updateMask: { paths: ["name"] } };
    assert.equal((await rejection(f.client.updateProduct(req))).code, Code.Unauthenticated);
    assert.equal(
      (await rejection(f.client.updateProduct(req, f.customer))).code,
      Code.PermissionDenied,
    );
  });
});

describe("DeleteProduct", () => {
  test("a deleted product is NOT_FOUND afterwards, even after it was read (and cached)", async () => {
    const { product } = await f.client.createProduct(createRequest(), f.admin);
    const id = product?.id ?? "";
    await f.client.getProduct({ productId: id });
    await f.client.getProduct({ productId: id });
    await f.client.deleteProduct({ productId: id }, f.admin);
    assert.equal((await rejection(f.client.getProduct({ productId: id }))).code, Code.NotFound);
    const rows = await f.sql`select 1 from products where id = ${id}`;
    assert.equal(rows.length, 0);
  });

  test("an unknown product, or a retried delete, is NOT_FOUND", async () => {
    const { product } = await f.client.createProduct(createRequest(), f.admin);
    const req = { productId: product?.id ?? "" };
    await f.client.deleteProduct(req, f.admin);
    assert.equal((await rejection(f.client.deleteProduct(req, f.admin))).code, Code.NotFound);
    const unknown = await rejection(f.client.deleteProduct({ productId: randomUUID() }, f.admin));
    assert.equal(unknown.code, Code.NotFound);
  });

  test("replaying the create of a deleted product is NOT_FOUND, not a new product", async () => {
    const req = createRequest();
    const { product } = await f.client.createProduct(req, f.admin);
    await f.client.deleteProduct({ productId: product?.id ?? "" }, f.admin);
    assert.equal((await rejection(f.client.createProduct(req, f.admin))).code, Code.NotFound);
    assert.equal(await rowsWithSku(req.sku), 0);
  });

  test("requires role admin", async () => {
    const { product } = await f.client.createProduct(createRequest(), f.admin);
    const req = { productId: product?.id ?? "" };
    assert.equal((await rejection(f.client.deleteProduct(req))).code, Code.Unauthenticated);
    assert.equal(
      (await rejection(f.client.deleteProduct(req, f.customer))).code,
      Code.PermissionDenied,
    );
    assert.equal((await f.client.getProduct(req)).product?.id, req.productId);
  });
});

describe("ListCategories", () => {
  test("lists each category in use with its product count, by name", async () => {
    const alpha = Array.from({ length: 3 }, (_, i) =>
      productRow({ sku: uniqueSku(`ALP${i}`), category: "cat-alpha" }),
    );
    const beta = productRow({ sku: uniqueSku("BET"), category: "cat-beta" });
    await f.store.insertMissing([...alpha, beta]);

    const counts = async () =>
      new Map((await f.client.listCategories({})).categories.map((c) => [c.name, c.productCount]));
    const { categories } = await f.client.listCategories({});
    const names = categories.map((c) => c.name);
    assert.deepEqual(names, [...names].sort(), "ordered by name");
    const before = await counts();
    assert.equal(before.get("cat-alpha"), 3n);
    assert.equal(before.get("cat-beta"), 1n);

    await f.client.deleteProduct({ productId: beta.id }, f.admin);
    await f.client.deleteProduct({ productId: alpha[0]?.id ?? "" }, f.admin);
    const afterDelete = await counts();
    assert.equal(afterDelete.get("cat-alpha"), 2n);
    assert.equal(afterDelete.has("cat-beta"), false, "a category without products is gone");
  });
});
