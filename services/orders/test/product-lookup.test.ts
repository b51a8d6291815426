import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  Code,
  ConnectError,
  createClient,
  createContextValues,
  createHandlerContext,
  createRouterTransport,
  type HandlerContext,
} from "@connectrpc/connect";
import { CatalogService } from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_service_pb.js";
import { createProductLookup } from "../src/product-lookup.js";

// PlaceOrder's product lookups: concurrent ones for a product share one GetProduct, and
// nothing outlives the call.

/** A catalog whose GetProduct answers after `release()`, counting calls and their headers. */
function slowCatalog() {
  const calls: { productId: string; authorization: string | null; requestId: string | null }[] = [];
  let release: () => void = () => {};
  let gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  const transport = createRouterTransport(({ service }) => {
    service(CatalogService, {
      async getProduct(req, ctx) {
        calls.push({
          productId: req.productId,
          authorization: ctx.requestHeader.get("authorization"),
          requestId: ctx.requestHeader.get("x-request-id"),
        });
        await gate;
        return { product: { id: req.productId, name: `product ${calls.length}` } };
      },
    });
  });
  return {
    client: createClient(CatalogService, transport),
    calls,
    release: () => {
      release();
      gate = new Promise<void>((resolve) => {
        release = resolve;
      });
    },
  };
}

function callerCtx(signal?: AbortSignal): HandlerContext {
  const ctx = createHandlerContext({
    service: CatalogService,
    method: CatalogService.method.getProduct,
    protocolName: "grpc",
    requestMethod: "POST",
    url: "http://orders.test/x",
    contextValues: createContextValues(),
    requestHeader: { authorization: "Bearer customer-token", "x-request-id": "req-1" },
    ...(signal === undefined ? {} : { requestSignal: signal }),
  });
  return ctx;
}

describe("product lookup", () => {
  test("concurrent lookups of one product share one GetProduct; a later one calls again", async () => {
    const catalog = slowCatalog();
    const lookUp = createProductLookup(catalog.client, 5_000);
    const first = Promise.all(Array.from({ length: 50 }, () => lookUp("p1", callerCtx())));
    const other = lookUp("p2", callerCtx());
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(catalog.calls.length, 2, "one call per product in flight");
    catalog.release();
    const products = await first;
    assert.ok(products.every((p) => p.id === "p1" && p.name === products[0]?.name));
    assert.equal((await other).id, "p2");
    const later = lookUp("p1", callerCtx());
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(catalog.calls.length, 3, "nothing kept once the call ended");
    catalog.release();
    await later;
  });

  test("the shared call carries no caller's token; one caller hanging up fails only itself", async () => {
    const catalog = slowCatalog();
    const lookUp = createProductLookup(catalog.client, 5_000);
    const hangUp = new AbortController();
    const leaving = lookUp("p1", callerCtx(hangUp.signal));
    const staying = lookUp("p1", callerCtx());
    await new Promise((resolve) => setTimeout(resolve, 20));
    hangUp.abort(new ConnectError("client went away", Code.Canceled));
    await assert.rejects(leaving, (err: unknown) => ConnectError.from(err).code === Code.Canceled);
    catalog.release();
    assert.equal((await staying).id, "p1");
    assert.equal(catalog.calls.length, 1);
    assert.equal(catalog.calls[0]?.authorization, null);
  });
});
