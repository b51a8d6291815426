import type { Logger } from "@meshmart/kit";
import type { NotificationRow } from "./store.js";

/**
 * Delivers a recorded notification (email, SMS, push…). Called after the notification is
 * stored, inside the event's transaction: a delivery that throws rolls the record back and
 * the event is retried, so a sender must tolerate an occasional repeat of the same
 * notification id (providers dedupe on it).
 */
export interface NotificationSender {
  send(notification: NotificationRow): Promise<void>;
}

/**
 * The local sender: logs that a notification went out, without its address or body (both
 * personal data), so the log proves delivery without becoming a copy of the mailbox.
 */
export function createLogSender(logger: Logger): NotificationSender {
  return {
    async send(n) {
      logger.info(
        { notification_id: n.id, user_id: n.user_id, kind: n.kind, order_id: n.order_id },
        "notification sent",
      );
    },
  };
}
