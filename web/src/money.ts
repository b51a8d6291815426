/** Money (meshmart.common.v1.Money) for display and arithmetic, exactly, in nanos. */

/** The fields of a Money the storefront reads: units is an int64 (bigint). */
export interface MoneyLike {
  currencyCode: string;
  units: bigint;
  nanos: number;
}

const NANOS = 1_000_000_000n;

/** The amount in nano units (units·10⁹ + nanos), exact. */
export function toNanos(money: MoneyLike): bigint {
  return money.units * NANOS + BigInt(money.nanos);
}

/** `amount` nano units of `currencyCode`, as a Money. */
export function fromNanos(amount: bigint, currencyCode: string): MoneyLike {
  return { currencyCode, units: amount / NANOS, nanos: Number(amount % NANOS) };
}

/** `money` times `quantity`. */
export function times(money: MoneyLike, quantity: number): MoneyLike {
  return fromNanos(toNanos(money) * BigInt(quantity), money.currencyCode);
}

const formats = new Map<string, Intl.NumberFormat>();

/** "$16.50" in the reader's locale; empty for no money. */
export function formatMoney(money: MoneyLike | undefined): string {
  if (money === undefined || money.currencyCode === "") return "";
  let format = formats.get(money.currencyCode);
  if (format === undefined) {
    format = new Intl.NumberFormat(undefined, { style: "currency", currency: money.currencyCode });
    formats.set(money.currencyCode, format);
  }
  const nanos = toNanos(money);
  const negative = nanos < 0n;
  const abs = negative ? -nanos : nanos;
  const fraction = (abs % NANOS).toString().padStart(9, "0");
  // A decimal string keeps every digit; a float would round large amounts.
  const decimal = `${negative ? "-" : ""}${abs / NANOS}.${fraction}` as `${number}`;
  return format.format(decimal);
}
