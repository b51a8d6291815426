import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import {
  ProductCreatedSchema,
  ProductDeletedSchema,
  ProductUpdatedSchema,
} from "@meshmart/kit/gen/meshmart/catalog/v1/events_pb.js";
import { type CatalogFixture, createCatalogFixture } from "./support/catalog-fixture.js";

// Product changes reach the outbox in the transaction that makes them: one event per real
// change, none for a retry that changes nothing or a change that fails.
let f: CatalogFixture;

before(async () => {
  f = await createCatalogFixture("catalog_events");
});
after(() => f?.close());

interface OutboxRow {
  event_id: string;
  subject: string;
  event_type: string;
  payload: Uint8Array;
}

async function eventsAbout(productId: string): Promise<OutboxRow[]> {
  const rows = await f.sql<OutboxRow[]>`
    select event_id, subject, event_type, payload from event_outbox order by seq`;
  return rows.filter((r) => {
    const decoded =
      r.event_type === ProductCreatedSchema.typeName
        ? fromBinary(ProductCreatedSchema, r.payload)
        : r.event_type === ProductUpdatedSchema.typeName
          ? fromBinary(ProductUpdatedSchema, r.payload)
          : fromBinary(ProductDeletedSchema, r.payload);
    return decoded.productId === productId;
  });
}

async function createProduct() {
  const { product } = await f.client.createProduct(
    {
      requestId: randomUUID(),
      sku: `EVT-${randomBytes(4).toString("hex").toUpperCase()}`,
      name: "Burr Grinder",
      description: "Conical burrs.",
      category: "grinders",
      price: { currencyCode: "EUR", units: 120n },
    },
    f.admin,
  );
  assert.ok(product);
  return product;
}

test("create, update and delete each write their event; a no-op retry writes none", async () => {
  const product = await createProduct();
  const update = {
    product: {
      id: product.id,
      name: "Burr Grinder II",
      description: product.description,
      price: { currencyCode: "EUR", units: 99n },
    },
    updateMask: { paths: ["name", "price", "description"] },
  };
  await f.client.updateProduct(update, f.admin);
  await f.client.updateProduct(update, f.admin);
  await f.client.deleteProduct({ productId: product.id }, f.admin);

  const events = await eventsAbout(product.id);
  assert.deepEqual(
    events.map((e) => e.subject),
    [
      "meshmart.catalog.product.created",
      "meshmart.catalog.product.updated",
      "meshmart.catalog.product.deleted",
    ],
  );
  const [created, updated, deleted] = events;
  assert.ok(created && updated && deleted);
  assert.equal(fromBinary(ProductCreatedSchema, created.payload).product?.version, 1n);
  const change = fromBinary(ProductUpdatedSchema, updated.payload);
  assert.equal(change.product?.name, "Burr Grinder II");
  assert.equal(change.product?.version, 2n);
  // description was in the mask but did not change.
  assert.deepEqual(change.changedFields.sort(), ["name", "price"]);
  assert.equal(fromBinary(ProductDeletedSchema, deleted.payload).version, 2n);
  assert.equal(new Set(events.map((e) => e.event_id)).size, 3);
});

test("a failed change writes no event", async () => {
  const product = await createProduct();
  const other = await createProduct();
  await assert.rejects(
    f.client.updateProduct(
      { product: { id: product.id, sku: other.sku }, updateMask: { paths: ["sku"] } },
      f.admin,
    ),
  );
  await assert.rejects(
    f.client.updateProduct(
      { product: { id: product.id, name: "stale", version: 7n }, updateMask: { paths: ["name"] } },
      f.admin,
    ),
  );
  const events = await eventsAbout(product.id);
  assert.deepEqual(
    events.map((e) => e.event_type),
    [ProductCreatedSchema.typeName],
  );
});
