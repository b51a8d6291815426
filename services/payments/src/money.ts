import { create } from "@bufbuild/protobuf";
import { type Money, MoneySchema } from "@meshmart/kit/gen/meshmart/common/v1/money_pb.js";

// ISO 4217 minor units that are not 2. A fixed table rather than Intl: ICU's currency
// digits follow CLDR's display rules (HUF shows 0 decimals), not the currency's minor unit.
const MINOR_DIGITS: Readonly<Record<string, number>> = {
  BIF: 0,
  CLP: 0,
  DJF: 0,
  GNF: 0,
  ISK: 0,
  JPY: 0,
  KMF: 0,
  KRW: 0,
  PYG: 0,
  RWF: 0,
  UGX: 0,
  UYI: 0,
  VND: 0,
  VUV: 0,
  XAF: 0,
  XOF: 0,
  XPF: 0,
  BHD: 3,
  IQD: 3,
  JOD: 3,
  KWD: 3,
  LYD: 3,
  OMR: 3,
  TND: 3,
  CLF: 4,
  UYW: 4,
};

const NANOS_PER_UNIT = 1_000_000_000n;

/** Decimal places of a currency's minor unit (2 unless ISO 4217 says otherwise). */
export function minorDigits(currency: string): number {
  return MINOR_DIGITS[currency] ?? 2;
}

/**
 * An API Money as integer minor units of its currency (12.50 EUR → 1250n). Undefined when
 * the amount is finer than the minor unit (12.505 EUR): a card can only be charged whole
 * cents, and rounding someone's money silently is not ours to decide.
 */
export function toMinorUnits(
  money: Pick<Money, "currencyCode" | "units" | "nanos">,
): bigint | undefined {
  const scale = 10n ** BigInt(minorDigits(money.currencyCode));
  const nanosPerMinor = NANOS_PER_UNIT / scale;
  const nanos = BigInt(money.nanos);
  if (nanos % nanosPerMinor !== 0n) return undefined;
  return money.units * scale + nanos / nanosPerMinor;
}

/** Integer minor units as an API Money (1250n EUR → 12 units, 500000000 nanos). */
export function fromMinorUnits(minor: bigint, currency: string): Money {
  const scale = 10n ** BigInt(minorDigits(currency));
  const nanosPerMinor = NANOS_PER_UNIT / scale;
  // BigInt division truncates toward zero, so units and nanos keep the same sign.
  return create(MoneySchema, {
    currencyCode: currency,
    units: minor / scale,
    nanos: Number((minor % scale) * nanosPerMinor),
  });
}
