import { randomUUID } from "node:crypto";
import { type EventNames, newEvent, writeEvents } from "@meshmart/kit";
import type { UserSignedUp } from "@meshmart/kit/gen/meshmart/identity/v1/events_pb.js";
import { NotificationSentSchema } from "@meshmart/kit/gen/meshmart/notifications/v1/events_pb.js";
import { NotificationChannel } from "@meshmart/kit/gen/meshmart/notifications/v1/notifications_pb.js";
import type {
  OrderCancelled,
  OrderConfirmed,
} from "@meshmart/kit/gen/meshmart/orders/v1/events_pb.js";
import type { TransactionSql } from "postgres";
import {
  type MessageText,
  orderCancelledMessage,
  orderConfirmedMessage,
  welcomeMessage,
} from "./messages.js";
import { toNotification } from "./notification-mapper.js";
import type { NotificationSender } from "./sender.js";
import type { NotificationStore } from "./store.js";

/** What the event handlers need. */
export interface EventHandlerDeps {
  store: NotificationStore;
  sender: NotificationSender;
  names: EventNames;
}

/**
 * The effects of the events notifications consumes. Each runs inside the transaction that
 * also records the event in the inbox, so a redelivered event changes nothing.
 */
export function createEventEffects({ store, sender, names }: EventHandlerDeps) {
  async function notify(
    tx: TransactionSql,
    target: { userId: string; recipient: string; orderId: string | null; sourceEventId: string },
    text: MessageText,
  ): Promise<void> {
    const { row, created } = await store.record(tx, {
      id: randomUUID(),
      user_id: target.userId,
      kind: text.kind,
      channel: NotificationChannel.EMAIL,
      recipient: target.recipient,
      subject: text.subject,
      body: text.body,
      order_id: target.orderId,
      source_event_id: target.sourceEventId,
    });
    if (!created) return;
    await sender.send(row);
    const notification = toNotification(row);
    await writeEvents(tx, names, [
      newEvent(NotificationSentSchema, {
        notificationId: row.id,
        userId: row.user_id,
        notification,
      }),
    ]);
  }

  async function orderNotification(
    tx: TransactionSql,
    event: OrderConfirmed | OrderCancelled,
    text: MessageText,
  ): Promise<void> {
    const userId = event.userId === "" ? (event.order?.userId ?? "") : event.userId;
    const user = await store.user(tx, userId);
    await notify(
      tx,
      {
        userId,
        // An account created before notifications ran has no address here yet; the
        // notification is still recorded (and readable in the API), addressed to no one.
        recipient: user?.email ?? "",
        orderId: event.orderId,
        sourceEventId: event.eventId,
      },
      text,
    );
  }

  return {
    async userSignedUp(tx: TransactionSql, event: UserSignedUp): Promise<void> {
      await store.upsertUser(tx, {
        user_id: event.userId,
        email: event.email,
        display_name: event.displayName,
      });
      await notify(
        tx,
        {
          userId: event.userId,
          recipient: event.email,
          orderId: null,
          sourceEventId: event.eventId,
        },
        welcomeMessage(event),
      );
    },

    async orderConfirmed(tx: TransactionSql, event: OrderConfirmed): Promise<void> {
      if (event.order === undefined) throw new Error("OrderConfirmed without its order");
      await orderNotification(tx, event, orderConfirmedMessage(event.order));
    },

    async orderCancelled(tx: TransactionSql, event: OrderCancelled): Promise<void> {
      if (event.order === undefined) throw new Error("OrderCancelled without its order");
      await orderNotification(tx, event, orderCancelledMessage(event.order));
    },
  };
}

/** The event effects, as {@link createEventEffects} returns them. */
export type EventEffects = ReturnType<typeof createEventEffects>;
