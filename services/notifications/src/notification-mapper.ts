import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { PageTokens } from "@meshmart/kit";
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
 * A signed token (the kit's PageTokens) for the page after `row`, bound to the listing it
 * was issued for (whose notifications, which order_id filter), so a token can be neither
 * written by a client nor replayed against another filter to skip rows.
 */
export function encodePageToken(
  tokens: PageTokens,
  row: NotificationRow,
  listing: NotificationListing,
): string {
  return tokens.issue({ t: row.created_key, i: row.id }, bindingOf(listing));
}

/** Whose notifications a listing covers, and its order_id filter ("" for none). */
export interface NotificationListing {
  userId: string;
  orderId: string;
}

/** created_at::text, e.g. 2026-11-29 12:10:11.123456+00; anything else never reaches SQL. */
const POSTGRES_TIMESTAMPTZ = /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,6})?[+-]\d{2}(:\d{2})?$/;

/** Reads a page token; INVALID_ARGUMENT naming page_token when it is not one for this listing. */
export function decodePageToken(
  tokens: PageTokens,
  token: string,
  listing: NotificationListing,
): NotificationCursor {
  const { t, i } = tokens.open(token, bindingOf(listing), ["t", "i"]);
  // Signed by us, so always well-formed; the checks keep a future format change from SQL.
  if (!POSTGRES_TIMESTAMPTZ.test(t) || !/^[0-9a-f-]{36}$/.test(i)) {
    throw new ConnectError("page_token is not a token this service issued", Code.InvalidArgument);
  }
  return { createdKey: t, id: i };
}

function bindingOf(listing: NotificationListing): string {
  return JSON.stringify([listing.userId, listing.orderId]);
}
