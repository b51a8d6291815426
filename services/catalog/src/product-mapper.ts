import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { PageTokens } from "@meshmart/kit";
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
 * Page tokens are opaque to clients and signed (the kit's PageTokens): the last (name, id)
 * of the page, good only with the filters it was made with. A token from another query,
 * or one a client wrote itself, is INVALID_ARGUMENT naming page_token, rather than
 * silently returning a page of something else.
 */
export function encodePageToken(
  tokens: PageTokens,
  after: ListCursor,
  filters: ListFilters,
): string {
  return tokens.issue({ n: after.name, i: after.id }, listing(filters));
}

/** Reads a page token; INVALID_ARGUMENT naming page_token when it is not one for these filters. */
export function decodePageToken(
  tokens: PageTokens,
  token: string,
  filters: ListFilters,
): ListCursor {
  const { n, i } = tokens.open(token, listing(filters), ["n", "i"]);
  return { name: n, id: i };
}

function listing(filters: ListFilters): string {
  return JSON.stringify([filters.category, filters.query]);
}
