import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type Notification,
  NotificationSchema,
} from "@meshmart/kit/gen/meshmart/notifications/v1/notifications_pb.js";
import type { NotificationCursor, NotificationRow } from "./store.js";

/** The API view of a stored notification. */
export function toNotification(row: NotificationRow): Notification {
  return create(NotificationSchema, {
    id: row.id,
    userId: row.user_id,
    kind: row.kind,
    channel: row.channel,
    recipient: row.recipient,
    subject: row.subject,
    body: row.body,
    orderId: row.order_id ?? "",
    sourceEventId: row.source_event_id,
    createTime: timestampFromDate(row.created_at),
  });
}

/**
 * An opaque token for the page after `row`, bound to the filter it was issued under so a
 * token cannot be replayed against another filter and skip rows.
 */
export function encodePageToken(row: NotificationRow, orderId: string): string {
  return Buffer.from(JSON.stringify({ t: row.created_key, i: row.id, o: orderId })).toString(
    "base64url",
  );
}

/** created_at::text, e.g. 2026-11-29 12:10:11.123456+00; anything else never reaches SQL. */
const POSTGRES_TIMESTAMPTZ = /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,6})?[+-]\d{2}(:\d{2})?$/;

/** Reads a page token; INVALID_ARGUMENT when it is malformed or for another filter. */
export function decodePageToken(token: string, orderId: string): NotificationCursor {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw invalidToken();
  }
  const t = parsed as Record<string, unknown> | null;
  if (
    typeof t !== "object" ||
    t === null ||
    typeof t.t !== "string" ||
    !POSTGRES_TIMESTAMPTZ.test(t.t) ||
    typeof t.i !== "string" ||
    !/^[0-9a-f-]{36}$/.test(t.i)
  ) {
    throw invalidToken();
  }
  if (t.o !== orderId) {
    throw new ConnectError("page_token was issued for a different order_id", Code.InvalidArgument);
  }
  return { createdKey: t.t, id: t.i };
}

function invalidToken(): ConnectError {
  return new ConnectError("page_token is not a token this service issued", Code.InvalidArgument);
}
