import type { ServiceImpl } from "@connectrpc/connect";
import { type PageTokens, requireCaller } from "@meshmart/kit";
import type { NotificationService } from "@meshmart/kit/gen/meshmart/notifications/v1/notifications_service_pb.js";
import { decodePageToken, encodePageToken, toNotification } from "./notification-mapper.js";
import type { NotificationStore } from "./store.js";

/** What the RPC handlers need. */
export interface NotificationDeps {
  store: NotificationStore;
  /** ListNotifications' page tokens (the kit's createPageTokens for its page_token field). */
  pageTokens: PageTokens;
}

const DEFAULT_PAGE_SIZE = 20;

/** The NotificationService: each caller reads only their own notifications. */
export function createNotificationHandlers({
  store,
  pageTokens,
}: NotificationDeps): ServiceImpl<typeof NotificationService> {
  return {
    async listNotifications(req, ctx) {
      const caller = requireCaller(ctx);
      const pageSize = req.pageSize === 0 ? DEFAULT_PAGE_SIZE : req.pageSize;
      const listing = { userId: caller.userId, orderId: req.orderId };
      const after =
        req.pageToken === "" ? undefined : decodePageToken(pageTokens, req.pageToken, listing);
      // One extra row tells whether another page exists without a count query.
      const rows = await store.list({
        userId: caller.userId,
        ...(req.orderId === "" ? {} : { orderId: req.orderId }),
        ...(after === undefined ? {} : { after }),
        limit: pageSize + 1,
      });
      const page = rows.slice(0, pageSize);
      const last = page.at(-1);
      return {
        notifications: page.map(toNotification),
        nextPageToken:
          rows.length > pageSize && last !== undefined
            ? encodePageToken(pageTokens, last, listing)
            : "",
      };
    },
  };
}
