import { type DescMessage, fromBinary } from "@bufbuild/protobuf";
import { EventHeaders, type Logger, type ServiceEvents, type Worker } from "@meshmart/kit";
import {
  OrderCancelledSchema,
  OrderConfirmedSchema,
  OrderPlacedSchema,
} from "@meshmart/kit/gen/meshmart/orders/v1/events_pb.js";
import type { OrderChanges } from "./order-changes.js";

const ORDER_EVENTS: ReadonlyMap<string, DescMessage> = new Map(
  [OrderPlacedSchema, OrderConfirmedSchema, OrderCancelledSchema].map((s) => [s.typeName, s]),
);

/**
 * Wakes the RPCs waiting on an order (WatchOrder, CancelOrder) on every replica when one of
 * its events is published, whichever replica's saga moved it. A plain NATS subscription, not
 * a durable consumer: a waiter only needs to know "look again now", nothing is stored for it,
 * and a missed message costs one fallback interval, never a wrong answer.
 */
export function createOrderEventTap(options: {
  events: Pick<ServiceEvents, "nc" | "names">;
  changes: OrderChanges;
  logger: Logger;
}): Worker {
  const { events, changes, logger } = options;
  let subscription: ReturnType<ServiceEvents["nc"]["subscribe"]> | undefined;
  let draining: Promise<void> | undefined;
  return {
    start() {
      const [subject = ""] = events.names.streamSubjects("orders");
      const sub = events.nc.subscribe(subject);
      subscription = sub;
      draining = (async () => {
        for await (const msg of sub) {
          const schema = ORDER_EVENTS.get(msg.headers?.get(EventHeaders.eventType) ?? "");
          if (schema === undefined) continue;
          try {
            const { orderId } = fromBinary(schema, msg.data) as unknown as { orderId: string };
            changes.notify(orderId);
          } catch (reason) {
            logger.debug({ err: String(reason), subject: msg.subject }, "undecodable order event");
          }
        }
      })();
    },
    async stop() {
      subscription?.unsubscribe();
      await draining;
    },
  };
}
