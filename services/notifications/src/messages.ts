import type { Money } from "@meshmart/kit/gen/meshmart/common/v1/money_pb.js";
import type { UserSignedUp } from "@meshmart/kit/gen/meshmart/identity/v1/events_pb.js";
import { NotificationKind } from "@meshmart/kit/gen/meshmart/notifications/v1/notifications_pb.js";
import type { Order } from "@meshmart/kit/gen/meshmart/orders/v1/orders_pb.js";

/** Subject line and body of a notification. */
export interface MessageText {
  kind: NotificationKind;
  subject: string;
  body: string;
}

/** The welcome message for a new account. */
export function welcomeMessage(event: UserSignedUp): MessageText {
  const name = event.displayName === "" ? "there" : event.displayName;
  return {
    kind: NotificationKind.WELCOME,
    subject: "Welcome to meshmart",
    body: `Hi ${name},\n\nyour meshmart account is ready. Happy shopping!\n`,
  };
}

/** The message for a confirmed order. */
export function orderConfirmedMessage(order: Order): MessageText {
  const lines = order.items.map((i) => `  ${i.quantity} x ${i.name} (${i.sku})`);
  return {
    kind: NotificationKind.ORDER_CONFIRMED,
    subject: `Order ${shortId(order.id)} confirmed`,
    body: [
      `Your order ${order.id} is confirmed.`,
      "",
      ...lines,
      "",
      `Total charged: ${formatMoney(order.total)}${order.cardLast4 === "" ? "" : ` (card ending ${order.cardLast4})`}.`,
      "",
    ].join("\n"),
  };
}

/** The message for a cancelled order, with the reason the saga gave. */
export function orderCancelledMessage(order: Order): MessageText {
  const reason = order.cancelReason === "" ? "it could not be completed" : order.cancelReason;
  return {
    kind: NotificationKind.ORDER_CANCELLED,
    subject: `Order ${shortId(order.id)} cancelled`,
    body: `Your order ${order.id} was cancelled: ${reason}.\nNothing was charged; any hold on your card is released.\n`,
  };
}

/** "EUR 49.90": a price as a customer reads it, exact to the cent and beyond. */
export function formatMoney(money: Money | undefined): string {
  if (money === undefined) return "0";
  const negative = money.units < 0n || money.nanos < 0;
  const units = money.units < 0n ? -money.units : money.units;
  const nanos = Math.abs(money.nanos);
  const fraction = String(nanos).padStart(9, "0").replace(/0+$/, "").padEnd(2, "0");
  return `${money.currencyCode} ${negative ? "-" : ""}${units}.${fraction}`;
}

function shortId(id: string): string {
  return id.slice(0, 8);
}
