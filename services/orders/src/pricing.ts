import { createHash } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Product } from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_pb.js";

const NANOS_PER_UNIT = 1_000_000_000n;

/** An amount as the API carries it (units + nanos), without its currency. */
export interface Amount {
  units: bigint;
  nanos: number;
}

/** One priced order line, ready to store. */
export interface PricedLine {
  productId: string;
  sku: string;
  name: string;
  quantity: number;
  unit: Amount;
  line: Amount;
}

/** The lines of an order and what they add up to. */
export interface PricedOrder {
  currency: string;
  lines: PricedLine[];
  total: Amount;
}

/** What the customer asked for: a product and a quantity. */
export interface RequestedItem {
  productId: string;
  quantity: number;
}

function toNanos(amount: Amount): bigint {
  return amount.units * NANOS_PER_UNIT + BigInt(amount.nanos);
}

function fromNanos(nanos: bigint): Amount {
  // Same sign on both parts, as Money requires; prices are never negative anyway.
  return { units: nanos / NANOS_PER_UNIT, nanos: Number(nanos % NANOS_PER_UNIT) };
}

/** Whether the amount is zero (an order of free products charges nothing). */
export function isZero(amount: Amount): boolean {
  return amount.units === 0n && amount.nanos === 0;
}

/**
 * Prices `items` with the catalog's products (in the same order), exactly: units and nanos
 * are multiplied and summed as integers, never through a double. An order has one currency,
 * since one payment pays for it: FAILED_PRECONDITION when the products' prices differ in it.
 */
export function priceOrder(
  items: readonly RequestedItem[],
  products: readonly Product[],
): PricedOrder {
  const lines: PricedLine[] = [];
  let currency: string | undefined;
  let total = 0n;
  items.forEach((item, i) => {
    const product = products[i];
    const price = product?.price;
    if (product === undefined || price === undefined) {
      throw new Error(`product ${item.productId} came back without a price`);
    }
    if (currency !== undefined && price.currencyCode !== currency) {
      throw new ConnectError(
        `the products are priced in different currencies (${currency}, ${price.currencyCode}); order them separately`,
        Code.FailedPrecondition,
      );
    }
    currency = price.currencyCode;
    const unit = { units: price.units, nanos: price.nanos };
    const line = toNanos(unit) * BigInt(item.quantity);
    total += line;
    lines.push({
      productId: product.id,
      sku: product.sku,
      name: product.name,
      quantity: item.quantity,
      unit,
      line: fromNanos(line),
    });
  });
  if (currency === undefined) throw new Error("an order needs at least one item");
  return { currency, lines, total: fromNanos(total) };
}

/**
 * Fingerprint of what was ordered: the (product, quantity) pairs, in product order, so a
 * retry listing the same items differently is still the same request. The card is left
 * out: a retry is answered with the order the first request made, paid with its card.
 */
export function itemsHash(items: readonly RequestedItem[]): string {
  const canonical = [...items]
    .sort((a, b) => (a.productId < b.productId ? -1 : a.productId > b.productId ? 1 : 0))
    .map((i) => `${i.productId.toLowerCase()}:${i.quantity}`)
    .join("\n");
  return createHash("sha256").update(canonical).digest("hex");
}
