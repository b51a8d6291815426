/** The storefront: header, routes, and the router started on the current location. */
import { cartCount, onCartChange } from "./cart.js";
import { h } from "./dom.js";
import { fallback, onNavigate, route, safeNext, startRouter } from "./router.js";
import { getSession, onSessionChange } from "./session.js";
import { signInPage, signOut, signUpPage } from "./views/account.js";
import { cartPage, checkoutPage } from "./views/cart.js";
import { productList, productPage } from "./views/catalog.js";
import { notificationsPage } from "./views/notifications.js";
import { orderPage, ordersPage } from "./views/orders.js";

route("/", productList);
route("/products/:id", productPage);
route("/cart", cartPage);
route("/checkout", checkoutPage);
route("/orders", ordersPage);
route("/orders/:id", orderPage);
route("/notifications", notificationsPage);
route("/signin", signInPage);
route("/signup", signUpPage);
fallback(({ main }) => {
  main.replaceChildren(
    h("h1", null, "Page not found"),
    h("p", null, h("a", { href: "/" }, "Back to the shop")),
  );
});

/** The header's links; the current page's is marked aria-current. */
function drawNav(): void {
  const nav = document.getElementById("site-nav");
  if (nav === null) return;
  const here = window.location.pathname;
  // From the sign-in pages, the links keep where the reader was going.
  const next = /^\/sign(in|up)\/?$/.test(here)
    ? safeNext(new URLSearchParams(window.location.search).get("next"))
    : here + window.location.search;
  const link = (href: string, ...label: (string | HTMLElement)[]) =>
    h(
      "li",
      null,
      h(
        "a",
        {
          href,
          "aria-current":
            here === href || (href !== "/" && here.startsWith(`${href}/`)) ? "page" : undefined,
        },
        ...label,
      ),
    );
  const session = getSession();
  const count = cartCount();
  nav.replaceChildren(
    h(
      "ul",
      null,
      link("/", "Shop"),
      link(
        "/cart",
        "Cart",
        " ",
        h("span", { class: "count" }, String(count)),
        h("span", { class: "visually-hidden" }, count === 1 ? " item" : " items"),
      ),
      session !== undefined && link("/orders", "My orders"),
      session !== undefined && link("/notifications", "Notifications"),
      session === undefined && link(`/signin?next=${encodeURIComponent(next)}`, "Sign in"),
      session === undefined && link(`/signup?next=${encodeURIComponent(next)}`, "Sign up"),
      session !== undefined &&
        h(
          "li",
          { class: "account" },
          h("span", { class: "muted" }, session.user.displayName),
          h("button", { type: "button", class: "link", onclick: () => void signOut() }, "Sign out"),
        ),
    ),
  );
}

onNavigate(drawNav);
onCartChange(drawNav);
onSessionChange(drawNav);
startRouter();
