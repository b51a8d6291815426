import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { type Product, ProductSchema } from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_pb.js";
import type { ListCursor, ProductRow } from "./store.js";

/** A stored row as the API's Product. */
export function toProduct(row: ProductRow): Product {
  return create(ProductSchema, {
    id: row.id,
    sku: row.sku,
    name: row.name,
    description: row.description,
    category: row.category,
    imageUrl: row.image_url,
    price: { currencyCode: row.price_currency, units: row.price_units, nanos: row.price_nanos },
    version: row.version,
    createTime: timestampFromDate(row.created_at),
    updateTime: timestampFromDate(row.updated_at),
  });
}

/** The filters a page token is bound to: a token is only valid with the query that made it. */
export interface ListFilters {
  category: string;
  query: string;
}

/**
 * Page tokens are opaque to clients (base64url JSON): the last (name, id) of the page and
 * the filters it was made with. Clients must not build them; a token from another query
 * is refused rather than silently returning a page of something else.
 */
export function encodePageToken(after: ListCursor, filters: ListFilters): string {
  return Buffer.from(
    JSON.stringify({ n: after.name, i: after.id, c: filters.category, q: filters.query }),
  ).toString("base64url");
}

/** Reads a page token; INVALID_ARGUMENT when it is malformed or belongs to other filters. */
export function decodePageToken(token: string, filters: ListFilters): ListCursor {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw new ConnectError("page_token is not a token this service issued", Code.InvalidArgument);
  }
  const t = parsed as Record<string, unknown>;
  if (
    typeof t !== "object" ||
    t === null ||
    typeof t.n !== "string" ||
    typeof t.i !== "string" ||
    !/^[0-9a-f-]{36}$/.test(t.i)
  ) {
    throw new ConnectError("page_token is not a token this service issued", Code.InvalidArgument);
  }
  if (t.c !== filters.category || t.q !== filters.query) {
    throw new ConnectError(
      "page_token was issued for a different category or query",
      Code.InvalidArgument,
    );
  }
  return { name: t.n, id: t.i };
}
