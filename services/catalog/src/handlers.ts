import { createHash, randomUUID } from "node:crypto";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { type PageTokens, requireRole } from "@meshmart/kit";
import { ProductSchema } from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_pb.js";
import {
  type CatalogService,
  CreateProductRequestSchema,
} from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_service_pb.js";
import type { ProductCache } from "./product-cache.js";
import { decodePageToken, encodePageToken, toProduct } from "./product-mapper.js";
import { type CatalogStore, isUniqueViolation, type ProductChanges } from "./store.js";

/** What the catalog handlers need. */
export interface CatalogDeps {
  store: CatalogStore;
  cache: ProductCache;
  /** ListProducts' page tokens (the kit's createPageTokens for its page_token field). */
  pageTokens: PageTokens;
}

const DEFAULT_PAGE_SIZE = 20;
const ADMIN = "admin";

/** The CatalogService: reads are public, changes need role admin. */
export function createCatalogHandlers({
  store,
  cache,
  pageTokens,
}: CatalogDeps): ServiceImpl<typeof CatalogService> {
  return {
    async getProduct(req) {
      const cached = await cache.get(req.productId);
      if (cached.kind === "hit") return { product: fromBinary(ProductSchema, cached.payload) };
      if (cached.kind === "deleted") throw notFound(req.productId);
      const row = await store.get(req.productId);
      if (row === undefined) throw notFound(req.productId);
      const product = toProduct(row);
      await cache.put(row.id, row.version, toBinary(ProductSchema, product));
      return { product };
    },

    async listProducts(req) {
      const filters = { category: req.category, query: req.query.trim() };
      const pageSize = req.pageSize === 0 ? DEFAULT_PAGE_SIZE : req.pageSize;
      const after =
        req.pageToken === "" ? undefined : decodePageToken(pageTokens, req.pageToken, filters);
      // One extra row tells whether another page exists without a count query.
      const rows = await store.list({
        ...(filters.category === "" ? {} : { category: filters.category }),
        ...(filters.query === "" ? {} : { text: filters.query }),
        ...(after === undefined ? {} : { after }),
        limit: pageSize + 1,
      });
      const page = rows.slice(0, pageSize);
      const last = page.at(-1);
      return {
        products: page.map(toProduct),
        nextPageToken:
          rows.length > pageSize && last !== undefined
            ? encodePageToken(pageTokens, { name: last.name, id: last.id }, filters)
            : "",
      };
    },

    async createProduct(req, ctx) {
      requireRole(ctx, ADMIN);
      const price = req.price;
      if (price === undefined) throw new ConnectError("price is required", Code.InvalidArgument);
      // A retry must carry the same request; the hash tells a retry from a reused id.
      const hash = createHash("sha256")
        .update(toBinary(CreateProductRequestSchema, { ...req, requestId: "" }))
        .digest("hex");
      const outcome = await store.create(
        {
          id: randomUUID(),
          sku: req.sku,
          name: req.name,
          description: req.description,
          category: req.category,
          image_url: req.imageUrl,
          price_currency: price.currencyCode,
          price_units: price.units,
          price_nanos: price.nanos,
        },
        req.requestId,
        hash,
      );
      switch (outcome.kind) {
        case "created":
          return { product: toProduct(outcome.product) };
        case "replayed":
          if (outcome.product === undefined) {
            throw new ConnectError(
              "the product this request created has since been deleted",
              Code.NotFound,
            );
          }
          return { product: toProduct(outcome.product) };
        case "conflict":
          throw outcome.reason === "sku_taken"
            ? new ConnectError(`a product with sku ${req.sku} already exists`, Code.AlreadyExists)
            : new ConnectError(
                "request_id was already used for a different request; use a new request_id",
                Code.FailedPrecondition,
              );
      }
    },

    async updateProduct(req, ctx) {
      requireRole(ctx, ADMIN);
      const product = req.product;
      const paths = req.updateMask?.paths ?? [];
      if (product === undefined)
        throw new ConnectError("product is required", Code.InvalidArgument);
      const changes: ProductChanges = {};
      for (const path of paths) {
        switch (path) {
          case "sku":
            changes.sku = product.sku;
            break;
          case "name":
            changes.name = product.name;
            break;
          case "description":
            changes.description = product.description;
            break;
          case "category":
            changes.category = product.category;
            break;
          case "image_url":
            changes.image_url = product.imageUrl;
            break;
          case "price":
            if (product.price === undefined)
              throw new ConnectError(
                "product.price is required by update_mask",
                Code.InvalidArgument,
              );
            changes.price_currency = product.price.currencyCode;
            changes.price_units = product.price.units;
            changes.price_nanos = product.price.nanos;
            break;
          default:
            throw new ConnectError(
              `update_mask path '${path}' cannot be updated`,
              Code.InvalidArgument,
            );
        }
      }
      let row: Awaited<ReturnType<CatalogStore["update"]>>;
      try {
        row = await store.update(product.id, changes, product.version);
      } catch (reason) {
        if (isUniqueViolation(reason)) {
          throw new ConnectError(
            `a product with sku ${product.sku} already exists`,
            Code.AlreadyExists,
          );
        }
        throw reason;
      }
      if (row === "version_mismatch") {
        throw new ConnectError(
          `product ${product.id} changed since version ${product.version}; read it again and retry`,
          Code.Aborted,
        );
      }
      if (row === undefined) throw notFound(product.id);
      const updated = toProduct(row);
      await cache.put(row.id, row.version, toBinary(ProductSchema, updated));
      return { product: updated };
    },

    async deleteProduct(req, ctx) {
      requireRole(ctx, ADMIN);
      const version = await store.delete(req.productId);
      if (version === undefined) throw notFound(req.productId);
      await cache.markDeleted(req.productId, version + 1n);
      return {};
    },

    async listCategories() {
      const categories = await store.listCategories();
      return {
        categories: categories.map((c) => ({ name: c.category, productCount: BigInt(c.count) })),
      };
    },
  };
}

function notFound(id: string): ConnectError {
  return new ConnectError(`product ${id} not found`, Code.NotFound);
}
