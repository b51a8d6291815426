import type { Routes } from "@meshmart/kit";
import { CatalogService } from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_service_pb.js";
import { type CatalogDeps, createCatalogHandlers } from "./handlers.js";

/** Catalog's RPC surface. */
export function createCatalogRoutes(deps: CatalogDeps): Routes {
  return (router) => {
    router.service(CatalogService, createCatalogHandlers(deps));
  };
}
