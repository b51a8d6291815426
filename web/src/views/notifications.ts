/** `/notifications`: what the store sent the reader (welcome, order outcomes). */
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { notifications } from "../api.js";
import { formatTime, h } from "../dom.js";
import { describeError, errorBox, isAbort } from "../errors.js";
import { navigate, type Page } from "../router.js";
import { getSession } from "../session.js";

export async function notificationsPage({ main, signal }: Page): Promise<void> {
  if (getSession() === undefined) {
    navigate(`/signin?next=${encodeURIComponent("/notifications")}`, { replace: true });
    return;
  }
  const list = h("ul", { class: "notification-list" });
  const status = h("p", { role: "status", class: "muted" });
  const more = h("div", { class: "more" });
  const refresh = h(
    "button",
    { type: "button", class: "secondary", onclick: () => void load("") },
    "Refresh",
  );
  main.replaceChildren(h("h1", null, "Notifications"), refresh, status, list, more);

  async function load(pageToken: string): Promise<void> {
    more.replaceChildren();
    if (pageToken === "") status.textContent = "Loading notifications…";
    try {
      const res = await notifications.listNotifications({ pageSize: 20, pageToken }, { signal });
      if (pageToken === "") list.replaceChildren();
      list.append(
        ...res.notifications.map((n) =>
          h(
            "li",
            { class: "notification" },
            h(
              "article",
              null,
              h("h2", null, n.subject),
              h(
                "p",
                { class: "muted" },
                formatTime(n.createTime && timestampDate(n.createTime)),
                n.recipient !== "" && ` · sent to ${n.recipient}`,
              ),
              h("p", { class: "body" }, n.body),
              n.orderId !== "" &&
                h("p", null, h("a", { href: `/orders/${n.orderId}` }, "View the order")),
            ),
          ),
        ),
      );
      const count = list.children.length;
      status.textContent =
        count === 0
          ? "No notifications yet. They arrive a moment after you sign up or an order completes."
          : `${count} notification${count === 1 ? "" : "s"}.`;
      if (res.nextPageToken !== "") {
        more.replaceChildren(
          h(
            "button",
            { type: "button", class: "secondary", onclick: () => void load(res.nextPageToken) },
            "Show older notifications",
          ),
        );
      }
    } catch (reason) {
      if (isAbort(reason, signal)) return;
      status.textContent = "";
      more.replaceChildren(errorBox(describeError(reason)));
    }
  }
  await load("");
}
