import { type EventHandler, onEvent } from "@meshmart/kit";
import { UserSignedUpSchema } from "@meshmart/kit/gen/meshmart/identity/v1/events_pb.js";
import {
  OrderCancelledSchema,
  OrderConfirmedSchema,
} from "@meshmart/kit/gen/meshmart/orders/v1/events_pb.js";
import type { EventEffects } from "./event-handlers.js";

/** The durable consumer notifications reads with; also its inbox key. Never rename it. */
export const CONSUMER = "notifications";

/** The events notifications consumes, as subscriptions reads it: one handler per event type. */
export function createSubscriptions(effects: EventEffects): EventHandler[] {
  return [
    onEvent(UserSignedUpSchema, (tx, event) => effects.userSignedUp(tx, event)),
    onEvent(OrderConfirmedSchema, (tx, event) => effects.orderConfirmed(tx, event)),
    onEvent(OrderCancelledSchema, (tx, event) => effects.orderCancelled(tx, event)),
  ];
}
