/** The cart and the checkout, where the cart becomes an order. */
import { orders } from "../api.js";
import {
  type CartLine,
  cartLines,
  clearCart,
  linePrice,
  MAX_QUANTITY,
  onCartChange,
  setQuantity,
} from "../cart.js";
import { announce, h, uuid } from "../dom.js";
import { clearFormProblem, describeError, showFormProblem } from "../errors.js";
import { formatMoney, fromNanos, times, toNanos } from "../money.js";
import { navigate, type Page } from "../router.js";
import { getSession } from "../session.js";

/** The cart's total per currency ("$12.00 + €3.00" if it ever mixes them). */
function subtotal(lines: CartLine[]): string {
  const sums = new Map<string, bigint>();
  for (const line of lines) {
    const amount = toNanos(times(linePrice(line), line.quantity));
    sums.set(line.price.currencyCode, (sums.get(line.price.currencyCode) ?? 0n) + amount);
  }
  return [...sums].map(([currency, nanos]) => formatMoney(fromNanos(nanos, currency))).join(" + ");
}

/** `/cart` */
export function cartPage({ main, signal }: Page): void {
  const body = h("div");
  main.replaceChildren(h("h1", null, "Cart"), body);
  const draw = () => {
    if (signal.aborted) return;
    const lines = cartLines();
    if (lines.length === 0) {
      body.replaceChildren(
        h("p", null, "Your cart is empty."),
        h("p", null, h("a", { href: "/" }, "Browse the shop")),
      );
      return;
    }
    body.replaceChildren(
      h(
        "ul",
        { class: "cart-lines" },
        lines.map((line) => {
          const id = `qty-${line.productId}`;
          return h(
            "li",
            { class: "cart-line" },
            h("a", { href: `/products/${line.productId}` }, line.name),
            h("span", { class: "muted" }, `${formatMoney(linePrice(line))} each`),
            h(
              "span",
              { class: "qty" },
              h("label", { for: id, class: "visually-hidden" }, `Quantity of ${line.name}`),
              h("input", {
                id,
                type: "number",
                inputmode: "numeric",
                min: 1,
                max: MAX_QUANTITY,
                value: line.quantity,
                onchange: (e: Event) => {
                  const n = (e.currentTarget as HTMLInputElement).valueAsNumber;
                  if (Number.isInteger(n) && n >= 1) setQuantity(line.productId, n);
                },
              }),
            ),
            h("span", { class: "line-total" }, formatMoney(times(linePrice(line), line.quantity))),
            h(
              "button",
              {
                type: "button",
                class: "link",
                "aria-label": `Remove ${line.name} from the cart`,
                onclick: () => {
                  setQuantity(line.productId, 0);
                  announce(`Removed ${line.name} from the cart.`);
                  main.querySelector<HTMLElement>("h1")?.focus();
                },
              },
              "Remove",
            ),
          );
        }),
      ),
      h("p", { class: "subtotal" }, "Subtotal: ", h("strong", null, subtotal(lines))),
      h("p", { class: "muted" }, "Prices are confirmed when you place the order."),
      h("p", null, h("a", { href: "/checkout", class: "button" }, "Checkout")),
    );
  };
  draw();
  // Another tab (or the header) may change the cart; redraw unless an input is being edited.
  onCartChange(() => {
    if (!(document.activeElement instanceof HTMLInputElement)) draw();
  }, signal);
}

/** The test cards of the fake payment provider (meshmart.common.v1.Card). */
const TEST_CARDS: [number: string, outcome: string][] = [
  ["4242424242424242", "approved"],
  ["4000000000000002", "declined"],
  ["4000000000009995", "declined: insufficient funds"],
];

/** `/checkout`: card details, then PlaceOrder and on to the order's page. */
export function checkoutPage({ main }: Page): void {
  if (getSession() === undefined) {
    navigate(`/signin?next=${encodeURIComponent("/checkout")}`, { replace: true });
    return;
  }
  const lines = cartLines();
  if (lines.length === 0) {
    main.replaceChildren(
      h("h1", null, "Checkout"),
      h("p", null, "Your cart is empty."),
      h("p", null, h("a", { href: "/" }, "Browse the shop")),
    );
    return;
  }
  // One id per checkout: a retried submit (network hiccup) is the same order, never two.
  const requestId = uuid();
  const input = (
    name: string,
    label: string,
    attrs: Record<string, string | number | boolean>,
    hint?: string,
  ) => {
    const id = `f-${name.replaceAll(".", "-")}`;
    const hintId = `${id}-hint`;
    return h(
      "div",
      { class: "field" },
      h("label", { for: id }, label),
      hint !== undefined && h("p", { class: "hint", id: hintId }, hint),
      h("input", {
        id,
        name,
        ...attrs,
        ...(hint === undefined ? {} : { "aria-describedby": hintId, "data-hint": hintId }),
      }),
    );
  };
  const form = h(
    "form",
    { class: "stack narrow", onsubmit: (e: SubmitEvent) => void submit(e) },
    h(
      "fieldset",
      null,
      h("legend", null, "Card"),
      input(
        "payment.card.number",
        "Card number",
        { inputmode: "numeric", autocomplete: "cc-number", required: true, maxlength: 23 },
        "Test cards: 4242 4242 4242 4242 is approved; 4000 0000 0000 0002 is declined; 4000 0000 0000 9995 is declined for insufficient funds.",
      ),
      h(
        "div",
        { class: "row" },
        input(
          "payment.card.exp_month",
          "Expiry month",
          { inputmode: "numeric", autocomplete: "cc-exp-month", required: true, maxlength: 2 },
          "MM",
        ),
        input(
          "payment.card.exp_year",
          "Expiry year",
          { inputmode: "numeric", autocomplete: "cc-exp-year", required: true, maxlength: 4 },
          "YYYY",
        ),
        input("payment.card.cvc", "CVC", {
          inputmode: "numeric",
          autocomplete: "cc-csc",
          required: true,
          maxlength: 4,
        }),
      ),
      input("payment.card.holder_name", "Name on card (optional)", {
        autocomplete: "cc-name",
        maxlength: 200,
      }),
    ),
    h("button", { type: "submit" }, `Place order · ${subtotal(lines)}`),
  );

  async function submit(event: SubmitEvent): Promise<void> {
    event.preventDefault();
    const data = new FormData(form);
    const text = (name: string) => String(data.get(name) ?? "").trim();
    const int = (name: string) => {
      const n = Number(text(name));
      return Number.isInteger(n) ? n : 0;
    };
    const button = form.querySelector<HTMLButtonElement>("button[type=submit]");
    clearFormProblem(form);
    if (button !== null) button.disabled = true;
    form.setAttribute("aria-busy", "true");
    try {
      const res = await orders.placeOrder({
        requestId,
        items: lines.map((l) => ({ productId: l.productId, quantity: l.quantity })),
        payment: {
          card: {
            number: text("payment.card.number").replace(/[\s-]/g, ""),
            expMonth: int("payment.card.exp_month"),
            expYear: int("payment.card.exp_year"),
            cvc: text("payment.card.cvc"),
            holderName: text("payment.card.holder_name"),
          },
        },
      });
      const order = res.order;
      if (order === undefined) throw new Error("the order was not returned");
      // The order exists now, whatever its outcome: the cart has become it.
      clearCart();
      navigate(`/orders/${order.id}`);
    } catch (reason) {
      showFormProblem(form, describeError(reason));
    } finally {
      if (button !== null) button.disabled = false;
      form.removeAttribute("aria-busy");
    }
  }

  main.replaceChildren(
    h("h1", null, "Checkout"),
    h(
      "section",
      { "aria-labelledby": "summary-heading", class: "summary" },
      h("h2", { id: "summary-heading" }, "Your order"),
      h(
        "ul",
        null,
        lines.map((l) =>
          h(
            "li",
            null,
            `${l.quantity} × ${l.name} — ${formatMoney(times(linePrice(l), l.quantity))}`,
          ),
        ),
      ),
      h("p", null, "Subtotal: ", h("strong", null, subtotal(lines))),
    ),
    h("h2", null, "Payment"),
    h(
      "p",
      { class: "muted" },
      "This store's payment provider is simulated; use a test card with any future expiry and any CVC.",
    ),
    h(
      "ul",
      { class: "test-cards" },
      TEST_CARDS.map(([number, outcome]) =>
        h(
          "li",
          null,
          h("code", null, number.replace(/(\d{4})(?=\d)/g, "$1 ")),
          ` ${outcome} `,
          h(
            "button",
            {
              type: "button",
              class: "link",
              "aria-label": `Use test card ${number} (${outcome})`,
              onclick: () => {
                const field = form.querySelector<HTMLInputElement>("[name='payment.card.number']");
                if (field === null) return;
                field.value = number;
                field.focus();
              },
            },
            "Use",
          ),
        ),
      ),
    ),
    form,
  );
}
