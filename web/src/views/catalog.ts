/** The shop: products with search and categories, and a product's own page. */
import { Code, ConnectError } from "@connectrpc/connect";
import type { Product } from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_pb.js";
import { catalog } from "../api.js";
import { addToCart, MAX_QUANTITY } from "../cart.js";
import { announce, h } from "../dom.js";
import { describeError, errorBox, isAbort } from "../errors.js";
import { formatMoney } from "../money.js";
import { navigate, type Page } from "../router.js";

const PAGE_SIZE = 24;
const SEARCH_DELAY_MS = 250;

/** A product's placeholder picture: its category's initial on a colour of its own. */
function tile(product: Product): HTMLElement {
  let hash = 0;
  for (const c of product.category) hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
  return h(
    "div",
    { class: `tile tile-${hash % 6}`, "aria-hidden": "true" },
    (product.category[0] ?? "?").toUpperCase(),
  );
}

function add(product: Product, quantity: number): void {
  addToCart(product, quantity);
  announce(`Added ${quantity} × ${product.name} to the cart.`);
}

function card(product: Product): HTMLElement {
  return h(
    "li",
    { class: "product-card" },
    h(
      "article",
      { "aria-labelledby": `p-${product.id}` },
      tile(product),
      h("h2", { id: `p-${product.id}` }, h("a", { href: `/products/${product.id}` }, product.name)),
      h("p", { class: "price" }, formatMoney(product.price)),
      h("p", { class: "muted" }, product.category),
      h(
        "button",
        { type: "button", class: "secondary", onclick: () => add(product, 1) },
        "Add to cart",
        // The visible words stay the start of the name (WCAG label in name).
        h("span", { class: "visually-hidden" }, `: ${product.name}`),
      ),
    ),
  );
}

/** `/?q=…&category=…`: the product list. */
export async function productList({ main, query, signal }: Page): Promise<void> {
  let q = query.get("q") ?? "";
  const category = query.get("category") ?? "";
  const heading = h("h1", null, category === "" ? "Shop" : `Shop: ${category}`);
  const search = h("input", {
    id: "search",
    name: "q",
    type: "search",
    value: q,
    autocomplete: "off",
    maxlength: 200,
    "aria-describedby": "search-hint",
  });
  const status = h("p", { role: "status", class: "muted", id: "results-status" });
  const list = h("ul", { class: "product-grid", "aria-labelledby": "results-heading" });
  const more = h("div", { class: "more" });
  const categories = h("ul", { class: "categories" });
  main.replaceChildren(
    heading,
    h(
      "form",
      {
        role: "search",
        class: "search",
        onsubmit: (e: SubmitEvent) => {
          e.preventDefault();
          void load(search.value.trim());
        },
      },
      h("label", { for: "search" }, "Search products"),
      h("div", { class: "row" }, search, h("button", { type: "submit" }, "Search")),
      h("p", { id: "search-hint", class: "visually-hidden" }, "Results update as you type."),
    ),
    h("nav", { "aria-label": "Categories" }, categories),
    h("h2", { id: "results-heading", class: "visually-hidden" }, "Products"),
    status,
    list,
    more,
  );

  let listing: AbortController | undefined;
  let timer: number | undefined;
  search.addEventListener("input", () => {
    window.clearTimeout(timer);
    timer = window.setTimeout(() => void load(search.value.trim()), SEARCH_DELAY_MS);
  });
  signal.addEventListener("abort", () => window.clearTimeout(timer));

  /** The URL of this list with `changes` applied. */
  const href = (changes: Record<string, string>): string => {
    const params = new URLSearchParams({ q, category, ...changes });
    for (const [k, v] of [...params]) if (v === "") params.delete(k);
    const s = params.toString();
    return s === "" ? "/" : `/?${s}`;
  };

  /** (Re)loads the list for `text`, page by page; the search box keeps focus. */
  async function load(text: string, pageToken = "", shown = 0): Promise<void> {
    if (pageToken === "") {
      listing?.abort();
      q = text;
      history.replaceState(null, "", href({}));
      list.replaceChildren();
      status.textContent = "Loading products…";
    }
    const mine = new AbortController();
    listing = mine;
    const stop = () => mine.abort();
    signal.addEventListener("abort", stop, { once: true });
    more.replaceChildren();
    try {
      const res = await catalog.listProducts(
        { pageSize: PAGE_SIZE, pageToken, category, query: q },
        { signal: mine.signal },
      );
      const total = shown + res.products.length;
      list.append(...res.products.map(card));
      status.textContent =
        total === 0
          ? `No products found${q === "" ? "" : ` for “${q}”`}.`
          : `${total} product${total === 1 ? "" : "s"}${res.nextPageToken === "" ? "" : " so far"}${q === "" ? "" : ` for “${q}”`}.`;
      if (res.nextPageToken !== "") {
        const button = h(
          "button",
          {
            type: "button",
            class: "secondary",
            onclick: () => {
              const first = list.children.length;
              void load(q, res.nextPageToken, total).then(() => {
                // Keyboard users land on the first new product, not back at the top.
                list.children[first]?.querySelector("a")?.focus();
              });
            },
          },
          "Show more products",
        );
        more.replaceChildren(button);
      }
    } catch (reason) {
      if (isAbort(reason, mine.signal)) return;
      status.textContent = "";
      more.replaceChildren(errorBox(describeError(reason)));
    } finally {
      signal.removeEventListener("abort", stop);
    }
  }

  const loadCategories = async () => {
    try {
      const res = await catalog.listCategories({}, { signal });
      const link = (name: string, label: string) =>
        h(
          "li",
          null,
          h(
            "a",
            {
              href: href({ category: name }),
              "aria-current": name === category ? "page" : undefined,
            },
            label,
          ),
        );
      categories.replaceChildren(
        link("", "All"),
        ...res.categories.map((c) => link(c.name, `${c.name} (${c.productCount})`)),
      );
    } catch (reason) {
      if (!isAbort(reason, signal)) categories.replaceChildren();
    }
  };
  await Promise.all([load(q), loadCategories()]);
}

/** `/products/:id`: one product. */
export async function productPage({ main, params, signal }: Page): Promise<void> {
  const id = params.id ?? "";
  let product: Product | undefined;
  try {
    product = (await catalog.getProduct({ productId: id }, { signal })).product;
  } catch (reason) {
    const code = ConnectError.from(reason).code;
    if (code !== Code.NotFound && code !== Code.InvalidArgument) throw reason;
  }
  if (product === undefined) {
    main.replaceChildren(
      h("h1", null, "Product not found"),
      h("p", null, "This product does not exist or is no longer sold."),
      h("p", null, h("a", { href: "/" }, "Back to the shop")),
    );
    return;
  }
  const p = product;
  const quantity = h("input", {
    id: "quantity",
    name: "quantity",
    class: "quantity",
    type: "number",
    inputmode: "numeric",
    min: 1,
    max: MAX_QUANTITY,
    value: 1,
    required: true,
  });
  main.replaceChildren(
    h(
      "nav",
      { "aria-label": "Breadcrumb", class: "breadcrumb" },
      h("a", { href: "/" }, "Shop"),
      " › ",
      h("a", { href: `/?category=${encodeURIComponent(p.category)}` }, p.category),
    ),
    h(
      "article",
      { class: "product" },
      tile(p),
      h(
        "div",
        null,
        h("h1", null, p.name),
        h("p", { class: "price big" }, formatMoney(p.price)),
        h("p", null, p.description),
        h("p", { class: "muted" }, `SKU ${p.sku}`),
        h(
          "form",
          {
            class: "add-form",
            onsubmit: (e: SubmitEvent) => {
              e.preventDefault();
              const n = quantity.valueAsNumber;
              if (!Number.isInteger(n) || n < 1) {
                quantity.reportValidity();
                return;
              }
              add(p, Math.min(n, MAX_QUANTITY));
            },
          },
          h("label", { for: "quantity" }, "Quantity"),
          quantity,
          h("button", { type: "submit" }, "Add to cart"),
          h(
            "button",
            {
              type: "button",
              class: "secondary",
              onclick: () => {
                const n = quantity.valueAsNumber;
                if (Number.isInteger(n) && n >= 1) add(p, Math.min(n, MAX_QUANTITY));
                navigate("/cart");
              },
            },
            "Buy now",
          ),
        ),
      ),
    ),
  );
}
