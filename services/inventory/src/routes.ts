import type { Routes } from "@meshmart/kit";
import { InventoryService } from "@meshmart/kit/gen/meshmart/inventory/v1/inventory_service_pb.js";
import { createInventoryHandlers, type InventoryDeps } from "./handlers.js";

/** Inventory's RPC surface. */
export function createInventoryRoutes(deps: InventoryDeps): Routes {
  return (router) => {
    router.service(InventoryService, createInventoryHandlers(deps));
  };
}
