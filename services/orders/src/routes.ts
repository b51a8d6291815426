import type { Routes } from "@meshmart/kit";
import { OrderService } from "@meshmart/kit/gen/meshmart/orders/v1/orders_service_pb.js";
import { createOrdersHandlers, type OrdersDeps } from "./handlers.js";

/** Orders' RPC surface. */
export function createOrdersRoutes(deps: OrdersDeps): Routes {
  return (router) => {
    router.service(OrderService, createOrdersHandlers(deps));
  };
}
