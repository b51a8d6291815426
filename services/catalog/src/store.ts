import { type EventNames, newEvent, type Sql, writeEvents } from "@meshmart/kit";
import {
  ProductCreatedSchema,
  ProductDeletedSchema,
  ProductUpdatedSchema,
} from "@meshmart/kit/gen/meshmart/catalog/v1/events_pb.js";
import { toProduct } from "./product-mapper.js";

/** A product as stored. Money is kept as units + nanos, exactly as the API carries it. */
export interface ProductRow {
  id: string;
  sku: string;
  name: string;
  description: string;
  category: string;
  image_url: string;
  price_currency: string;
  price_units: bigint;
  price_nanos: number;
  version: bigint;
  created_at: Date;
  updated_at: Date;
}

/** Fields a product is created with. */
export type NewProduct = Omit<ProductRow, "version" | "created_at" | "updated_at">;

/** Fields UpdateProduct may change; only those present are written. */
export type ProductChanges = Partial<
  Omit<ProductRow, "id" | "version" | "created_at" | "updated_at">
>;

/** Where a page of ListProducts starts: after this (name, id). */
export interface ListCursor {
  name: string;
  id: string;
}

/** Filters and page bounds of ListProducts. */
export interface ListQuery {
  category?: string;
  text?: string;
  after?: ListCursor;
  limit: number;
}

/** Outcome of an idempotent create. */
export type CreateOutcome =
  | { kind: "created"; product: ProductRow }
  | { kind: "replayed"; product: ProductRow | undefined }
  | { kind: "conflict"; reason: "request_id_reused" | "sku_taken" };

const columns =
  "id, sku, name, description, category, image_url, price_currency, price_units, price_nanos, version, created_at, updated_at";

/** Every SQL statement catalog runs. */
export interface CatalogStore {
  get(id: string): Promise<ProductRow | undefined>;
  list(query: ListQuery): Promise<ProductRow[]>;
  /** Creates once per request id; `requestHash` tells a retry from a reuse of the id. */
  create(product: NewProduct, requestId: string, requestHash: string): Promise<CreateOutcome>;
  /**
   * Applies changes and bumps the version. With `expectedVersion` > 0 the update only
   * happens at that version (optimistic concurrency). Undefined when no such product;
   * throws on a taken SKU.
   */
  update(
    id: string,
    changes: ProductChanges,
    expectedVersion: bigint,
  ): Promise<ProductRow | "version_mismatch" | undefined>;
  /** Deletes and returns the deleted row's version, undefined when it did not exist. */
  delete(id: string): Promise<bigint | undefined>;
  listCategories(): Promise<{ category: string; count: number }[]>;
  count(): Promise<number>;
  /** Inserts products whose SKU is new (demo seed); returns how many were inserted. */
  insertMissing(products: NewProduct[]): Promise<number>;
}

/** Postgres error code for a unique violation. */
const UNIQUE_VIOLATION = "23505";

/** Whether `reason` is a unique-constraint violation on `constraint`. */
export function isUniqueViolation(reason: unknown, constraint?: string): boolean {
  const e = reason as { code?: string; constraint_name?: string };
  return (
    e.code === UNIQUE_VIOLATION && (constraint === undefined || e.constraint_name === constraint)
  );
}

/** The API field path (as in an update mask) a column belongs to. */
function fieldPathOf(column: string): string {
  return column.startsWith("price_") ? "price" : column;
}

/**
 * The store over catalog's own database. Every change writes its product event to the
 * outbox in the same transaction, so subscribers see exactly the changes that committed.
 */
export function createCatalogStore(sql: Sql, names: EventNames): CatalogStore {
  return {
    async get(id) {
      const rows = await sql<
        ProductRow[]
      >`select ${sql.unsafe(columns)} from products where id = ${id}`;
      return rows[0];
    },

    list({ category, text, after, limit }) {
      const categoryFilter = category === undefined ? sql`` : sql`and category = ${category}`;
      const textFilter =
        text === undefined
          ? sql``
          : sql`and (search @@ websearch_to_tsquery('simple', ${text}) or name ilike ${`%${escapeLike(text)}%`})`;
      const cursor =
        after === undefined ? sql`` : sql`and (name, id) > (${after.name}, ${after.id}::uuid)`;
      return sql<ProductRow[]>`
        select ${sql.unsafe(columns)} from products
        where true ${categoryFilter} ${textFilter} ${cursor}
        order by name, id
        limit ${limit}`;
    },

    async create(product, requestId, requestHash) {
      return sql.begin(async (tx): Promise<CreateOutcome> => {
        // Serializes concurrent retries of one request id without a table lock.
        const claimed = await tx<{ product_id: string }[]>`
          insert into create_product_requests (request_id, request_hash, product_id)
          values (${requestId}, ${requestHash}, ${product.id})
          on conflict (request_id) do nothing
          returning product_id`;
        if (claimed.length === 0) {
          const [earlier] = await tx<{ request_hash: string; product_id: string }[]>`
            select request_hash, product_id from create_product_requests where request_id = ${requestId}`;
          if (earlier === undefined || earlier.request_hash !== requestHash) {
            return { kind: "conflict", reason: "request_id_reused" };
          }
          const [existing] = await tx<ProductRow[]>`
            select ${tx.unsafe(columns)} from products where id = ${earlier.product_id}`;
          return { kind: "replayed", product: existing };
        }
        const inserted = await tx<ProductRow[]>`
          insert into products (id, sku, name, description, category, image_url, price_currency, price_units, price_nanos)
          values (${product.id}, ${product.sku}, ${product.name}, ${product.description}, ${product.category},
                  ${product.image_url}, ${product.price_currency}, ${product.price_units.toString()}, ${product.price_nanos})
          on conflict (sku) do nothing
          returning ${tx.unsafe(columns)}`;
        const row = inserted[0];
        if (row === undefined) {
          // Undo the claim too: the request failed, a corrected retry may reuse its id.
          await tx`delete from create_product_requests where request_id = ${requestId}`;
          return { kind: "conflict", reason: "sku_taken" };
        }
        await writeEvents(tx, names, [
          newEvent(ProductCreatedSchema, { productId: row.id, product: toProduct(row) }),
        ]);
        return { kind: "created", product: row };
      });
    },

    async update(id, changes, expectedVersion) {
      const assignments = Object.entries(changes)
        .filter(([, v]) => v !== undefined)
        .map(([column, value]) => ({
          column,
          value: (typeof value === "bigint" ? value.toString() : value) as string | number,
        }));
      return sql.begin(async (tx) => {
        const [current] = await tx<ProductRow[]>`
          select ${tx.unsafe(columns)} from products where id = ${id} for update`;
        if (current === undefined) return undefined;
        const changed = assignments.filter(({ column, value }) => {
          const stored = current[column as keyof ProductRow];
          return (typeof stored === "bigint" ? stored.toString() : stored) !== value;
        });
        // A retried update finds nothing left to change and gets the current row, whatever
        // version it names: retries are safe, and no event announces a non-change.
        if (changed.length === 0) return current;
        if (expectedVersion > 0n && current.version !== expectedVersion) return "version_mismatch";
        const set = changed.reduce(
          (acc, { column, value }) => tx`${acc}, ${tx(column)} = ${value}`,
          tx`version = version + 1, updated_at = now()`,
        );
        const [row] = await tx<ProductRow[]>`
          update products set ${set} where id = ${id} returning ${tx.unsafe(columns)}`;
        if (row === undefined) return undefined;
        await writeEvents(tx, names, [
          newEvent(ProductUpdatedSchema, {
            productId: row.id,
            product: toProduct(row),
            changedFields: [...new Set(changed.map((c) => fieldPathOf(c.column)))],
          }),
        ]);
        return row;
      });
    },

    async delete(id) {
      return sql.begin(async (tx) => {
        const [row] = await tx<{ version: bigint }[]>`
          delete from products where id = ${id} returning version`;
        if (row === undefined) return undefined;
        await writeEvents(tx, names, [
          newEvent(ProductDeletedSchema, { productId: id, version: row.version }),
        ]);
        return row.version;
      });
    },

    async listCategories() {
      const rows = await sql<{ category: string; count: bigint }[]>`
        select category, count(*) as count from products group by category order by category`;
      return rows.map((r) => ({ category: r.category, count: Number(r.count) }));
    },

    async count() {
      const [row] = await sql<{ n: bigint }[]>`select count(*) as n from products`;
      return Number(row?.n ?? 0n);
    },

    async insertMissing(products) {
      if (products.length === 0) return 0;
      const values = products.map((p) => ({ ...p, price_units: p.price_units.toString() }));
      return sql.begin(async (tx) => {
        const rows = await tx<ProductRow[]>`
          insert into products ${tx(values, "id", "sku", "name", "description", "category", "image_url", "price_currency", "price_units", "price_nanos")}
          on conflict (sku) do nothing
          returning ${tx.unsafe(columns)}`;
        await writeEvents(
          tx,
          names,
          rows.map((row) =>
            newEvent(ProductCreatedSchema, { productId: row.id, product: toProduct(row) }),
          ),
        );
        return rows.length;
      });
    },
  };
}

function escapeLike(text: string): string {
  return text.replace(/[\\%_]/g, (c) => `\\${c}`);
}
