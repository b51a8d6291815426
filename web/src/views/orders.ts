/** An order followed live (WatchOrder), and the list of the reader's orders. */
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { type Order, OrderStatus } from "@meshmart/kit/gen/meshmart/orders/v1/orders_pb.js";
import { orders } from "../api.js";
import { addToCart } from "../cart.js";
import { announce, fill, formatTime, h, sleep } from "../dom.js";
import { describeError, errorBox, isAbort } from "../errors.js";
import { formatMoney } from "../money.js";
import { navigate, type Page } from "../router.js";
import { getSession } from "../session.js";

const STATUS_TEXT: Record<OrderStatus, string> = {
  [OrderStatus.UNSPECIFIED]: "Unknown",
  [OrderStatus.PENDING]: "Pending",
  [OrderStatus.CONFIRMED]: "Confirmed",
  [OrderStatus.CANCELLED]: "Cancelled",
};
/** Retry delays of a broken watch: quick first, then backing off. */
const RETRY_MS = [500, 1_000, 2_000, 5_000, 10_000];

function isTerminal(order: Order): boolean {
  return order.status === OrderStatus.CONFIRMED || order.status === OrderStatus.CANCELLED;
}

function shortId(id: string): string {
  return id.slice(0, 8);
}

/** Status as a badge; data-status holds the enum name for styling (and tests). */
function badge(order: Order): HTMLElement {
  const name = OrderStatus[order.status] ?? "UNSPECIFIED";
  return h(
    "span",
    { class: `badge status-${name.toLowerCase()}`, "data-status": name },
    STATUS_TEXT[order.status],
  );
}

function requireSignIn(path: string): boolean {
  if (getSession() !== undefined) return true;
  navigate(`/signin?next=${encodeURIComponent(path)}`, { replace: true });
  return false;
}

/** `/orders/:id`: the order, updated as WatchOrder streams its changes. */
export async function orderPage({ main, params, signal }: Page): Promise<void> {
  const id = params.id ?? "";
  if (!requireSignIn(`/orders/${id}`)) return;
  const status = h("div", { class: "order-status", role: "status", "aria-live": "polite" });
  const live = h("p", { class: "muted live" });
  const details = h("div");
  const actions = h("div", { class: "actions" });
  const problems = h("div");
  main.replaceChildren(
    h("h1", null, `Order ${shortId(id)}`),
    status,
    live,
    problems,
    details,
    actions,
  );

  let shown: Order | undefined;
  const draw = (order: Order) => {
    const changed = shown === undefined || shown.status !== order.status;
    shown = order;
    if (changed) {
      // Only a change of status is announced (the live region), not every redraw.
      fill(
        status,
        h("p", null, "Status: ", badge(order)),
        order.status === OrderStatus.PENDING &&
          h("p", { class: "muted" }, "We are reserving your items and authorising your card…"),
        order.status === OrderStatus.CONFIRMED &&
          h("p", null, "Thank you! Your items are reserved and your card was charged."),
        order.status === OrderStatus.CANCELLED &&
          h(
            "p",
            { class: "cancel-reason" },
            `Reason: ${order.cancelReason === "" ? "not given" : order.cancelReason}`,
          ),
      );
    }
    details.replaceChildren(
      h(
        "table",
        { class: "items" },
        h("caption", { class: "visually-hidden" }, "Items"),
        h(
          "thead",
          null,
          h(
            "tr",
            null,
            h("th", { scope: "col" }, "Item"),
            h("th", { scope: "col" }, "Quantity"),
            h("th", { scope: "col" }, "Price"),
            h("th", { scope: "col" }, "Total"),
          ),
        ),
        h(
          "tbody",
          null,
          order.items.map((item) =>
            h(
              "tr",
              null,
              h("td", null, h("a", { href: `/products/${item.productId}` }, item.name)),
              h("td", null, String(item.quantity)),
              h("td", null, formatMoney(item.unitPrice)),
              h("td", null, formatMoney(item.lineTotal)),
            ),
          ),
        ),
        h(
          "tfoot",
          null,
          h(
            "tr",
            null,
            h("th", { scope: "row", colspan: 3 }, "Total"),
            h("td", null, h("strong", null, formatMoney(order.total))),
          ),
        ),
      ),
      h(
        "p",
        { class: "muted" },
        `Placed ${formatTime(order.createTime && timestampDate(order.createTime))}`,
        order.cardLast4 !== "" && ` · card ending ${order.cardLast4}`,
      ),
    );
    fill(
      actions,
      order.status === OrderStatus.PENDING &&
        h(
          "button",
          { type: "button", class: "secondary", onclick: () => void cancel() },
          "Cancel order",
        ),
      order.status === OrderStatus.CANCELLED &&
        order.items.length > 0 &&
        h(
          "button",
          {
            type: "button",
            class: "secondary",
            onclick: () => {
              for (const item of order.items) {
                addToCart(
                  { id: item.productId, name: item.name, sku: item.sku, price: item.unitPrice },
                  item.quantity,
                );
              }
              navigate("/cart");
            },
          },
          "Put these items back in the cart",
        ),
      h("a", { href: "/orders" }, "All my orders"),
    );
  };

  async function cancel(): Promise<void> {
    problems.replaceChildren();
    try {
      const res = await orders.cancelOrder({ orderId: id }, { signal });
      if (res.order !== undefined) draw(res.order);
    } catch (reason) {
      if (!isAbort(reason, signal)) problems.replaceChildren(errorBox(describeError(reason)));
    }
  }

  /**
   * Follows the order until it is terminal. The stream can break (edge restart, network):
   * it is opened again, and its first message is the order's current state, so nothing
   * that happened meanwhile is missed.
   */
  async function follow(first: (ok: boolean) => void): Promise<void> {
    let attempt = 0;
    while (!signal.aborted) {
      try {
        live.textContent = "Following live updates…";
        for await (const res of orders.watchOrder({ orderId: id }, { signal })) {
          if (res.order === undefined) continue;
          attempt = 0;
          problems.replaceChildren();
          draw(res.order);
          first(true);
        }
        if (shown !== undefined && isTerminal(shown)) {
          live.textContent = "This order is final.";
          return;
        }
      } catch (reason) {
        // Only the reader leaving stops following; a CANCELED from the server is retried.
        if (signal.aborted) return;
        const code = ConnectError.from(reason).code;
        const problem = describeError(reason);
        if (
          code === Code.NotFound ||
          code === Code.InvalidArgument ||
          code === Code.Unauthenticated ||
          code === Code.PermissionDenied
        ) {
          if (shown === undefined) {
            main.replaceChildren(
              h(
                "h1",
                null,
                code === Code.NotFound || code === Code.InvalidArgument
                  ? "Order not found"
                  : "Can't show this order",
              ),
              errorBox(problem),
              h("p", null, h("a", { href: "/orders" }, "All my orders")),
            );
          } else {
            problems.replaceChildren(errorBox(problem));
          }
          live.textContent = "";
          first(false);
          return;
        }
        live.textContent = `Live updates interrupted (${problem.message}); reconnecting…`;
      }
      await sleep(RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)] ?? 10_000, signal);
      attempt++;
    }
  }

  // The page is ready (and focus moves) once the first state arrived or the watch failed.
  await new Promise<void>((resolve) => {
    let done = false;
    const once = (ok: boolean) => {
      if (done) return;
      done = true;
      if (ok && shown !== undefined && isTerminal(shown))
        announce(`Order ${STATUS_TEXT[shown.status]}.`);
      resolve();
    };
    signal.addEventListener("abort", () => once(false), { once: true });
    void follow(once).finally(() => once(false));
  });
}

/** `/orders`: the reader's orders, newest first. */
export async function ordersPage({ main, signal }: Page): Promise<void> {
  if (!requireSignIn("/orders")) return;
  const list = h("ul", { class: "order-list" });
  const more = h("div", { class: "more" });
  main.replaceChildren(h("h1", null, "My orders"), list, more);
  const load = async (pageToken: string): Promise<void> => {
    more.replaceChildren();
    try {
      const res = await orders.listOrders({ pageSize: 20, pageToken }, { signal });
      if (pageToken === "" && res.orders.length === 0) {
        list.replaceChildren(
          h("li", null, "You have no orders yet. ", h("a", { href: "/" }, "Start shopping")),
        );
      }
      const first = list.children.length;
      list.append(
        ...res.orders.map((order) =>
          h(
            "li",
            { class: "order-row" },
            h("a", { href: `/orders/${order.id}` }, `Order ${shortId(order.id)}`),
            badge(order),
            h("span", null, formatMoney(order.total)),
            h(
              "span",
              { class: "muted" },
              `${order.items.reduce((n, i) => n + i.quantity, 0)} items · ${formatTime(order.createTime && timestampDate(order.createTime))}`,
            ),
          ),
        ),
      );
      if (res.nextPageToken !== "") {
        more.replaceChildren(
          h(
            "button",
            {
              type: "button",
              class: "secondary",
              onclick: () =>
                void load(res.nextPageToken).then(() =>
                  list.children[first + res.orders.length]?.querySelector("a")?.focus(),
                ),
            },
            "Show older orders",
          ),
        );
      }
    } catch (reason) {
      if (!isAbort(reason, signal)) more.replaceChildren(errorBox(describeError(reason)));
    }
  };
  await load("");
}
