import type { Routes } from "@meshmart/kit";
import { PaymentService } from "@meshmart/kit/gen/meshmart/payments/v1/payments_service_pb.js";
import { createPaymentsHandlers, type PaymentsDeps } from "./handlers.js";

/** Payments' RPC surface. */
export function createPaymentsRoutes(deps: PaymentsDeps): Routes {
  return (router) => {
    router.service(PaymentService, createPaymentsHandlers(deps));
  };
}
