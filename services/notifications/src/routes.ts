import type { Routes } from "@meshmart/kit";
import { NotificationService } from "@meshmart/kit/gen/meshmart/notifications/v1/notifications_service_pb.js";
import { createNotificationHandlers, type NotificationDeps } from "./handlers.js";

/** Notifications' RPC surface. */
export function createNotificationRoutes(deps: NotificationDeps): Routes {
  return (router) => {
    router.service(NotificationService, createNotificationHandlers(deps));
  };
}
