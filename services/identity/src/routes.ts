import type { Routes } from "@meshmart/kit";
import { IdentityService } from "@meshmart/kit/gen/meshmart/identity/v1/identity_service_pb.js";
import { createIdentityHandlers, type IdentityDeps } from "./handlers.js";

/** Identity's RPC surface. */
export function createIdentityRoutes(deps: IdentityDeps): Routes {
  return (router) => {
    router.service(IdentityService, createIdentityHandlers(deps));
  };
}
