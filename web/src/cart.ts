/** The cart, kept in the browser (localStorage) until checkout; shared by the site's tabs. */
import type { MoneyLike } from "./money.js";

/** One product in the cart, with what was shown when it was added. */
export interface CartLine {
  productId: string;
  name: string;
  sku: string;
  quantity: number;
  /** The price when added; the order is priced by catalog at checkout. */
  price: { currencyCode: string; units: string; nanos: number };
}

const KEY = "meshmart.cart.v1";
/** The most of one product an order may hold (OrderItemInput.quantity). */
export const MAX_QUANTITY = 1000;
const listeners = new Set<() => void>();

function isLine(value: unknown): value is CartLine {
  if (typeof value !== "object" || value === null) return false;
  const l = value as Record<string, unknown>;
  const price = l.price as Record<string, unknown> | undefined;
  return (
    typeof l.productId === "string" &&
    typeof l.name === "string" &&
    typeof l.sku === "string" &&
    Number.isInteger(l.quantity) &&
    typeof price === "object" &&
    price !== null &&
    typeof price.currencyCode === "string" &&
    typeof price.units === "string" &&
    /^-?\d+$/.test(price.units) &&
    typeof price.nanos === "number"
  );
}

/** The cart's lines, in the order they were added. */
export function cartLines(): CartLine[] {
  try {
    const parsed: unknown = JSON.parse(localStorage.getItem(KEY) ?? "[]");
    return Array.isArray(parsed) ? parsed.filter(isLine) : [];
  } catch {
    return [];
  }
}

function save(lines: CartLine[]): void {
  if (lines.length === 0) localStorage.removeItem(KEY);
  else localStorage.setItem(KEY, JSON.stringify(lines));
  for (const listener of listeners) listener();
}

/** Units in the cart, for the header badge. */
export function cartCount(): number {
  return cartLines().reduce((n, l) => n + l.quantity, 0);
}

/** A line's unit price as Money. */
export function linePrice(line: CartLine): MoneyLike {
  return { ...line.price, units: BigInt(line.price.units) };
}

/** Adds `quantity` of a product (capped at {@link MAX_QUANTITY}). */
export function addToCart(
  product: { id: string; name: string; sku: string; price?: MoneyLike | undefined },
  quantity: number,
): void {
  const lines = cartLines();
  const existing = lines.find((l) => l.productId === product.id);
  if (existing !== undefined) {
    existing.quantity = Math.min(MAX_QUANTITY, existing.quantity + quantity);
  } else {
    const price = product.price ?? { currencyCode: "", units: 0n, nanos: 0 };
    lines.push({
      productId: product.id,
      name: product.name,
      sku: product.sku,
      quantity: Math.min(MAX_QUANTITY, quantity),
      price: {
        currencyCode: price.currencyCode,
        units: price.units.toString(),
        nanos: price.nanos,
      },
    });
  }
  save(lines);
}

/** Sets a line's quantity; 0 removes it. */
export function setQuantity(productId: string, quantity: number): void {
  const lines = cartLines();
  const line = lines.find((l) => l.productId === productId);
  if (line === undefined) return;
  if (quantity <= 0) {
    save(lines.filter((l) => l !== line));
    return;
  }
  line.quantity = Math.min(MAX_QUANTITY, Math.floor(quantity));
  save(lines);
}

/** Empties the cart. */
export function clearCart(): void {
  save([]);
}

/**
 * Calls `listener` whenever the cart changes, in this tab or another; until `signal`
 * aborts, when given (a page listens only while it is shown).
 */
export function onCartChange(listener: () => void, signal?: AbortSignal): void {
  listeners.add(listener);
  signal?.addEventListener("abort", () => listeners.delete(listener), { once: true });
}

window.addEventListener("storage", (event) => {
  if (event.key !== KEY && event.key !== null) return;
  for (const listener of listeners) listener();
});
