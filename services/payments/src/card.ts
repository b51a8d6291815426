/** Card network, as payments stores it. */
export type CardBrandName = "visa" | "mastercard" | "amex" | "other";

/** What payments keeps of a card: never the number itself. */
export interface CardSummary {
  last4: string;
  brand: CardBrandName;
}

/** Last four digits and network of a card number (digits only, as the API validated it). */
export function summarizeCard(number: string): CardSummary {
  return { last4: number.slice(-4), brand: brandOf(number) };
}

function brandOf(number: string): CardBrandName {
  if (number.startsWith("4")) return "visa";
  const two = Number(number.slice(0, 2));
  const four = Number(number.slice(0, 4));
  if ((two >= 51 && two <= 55) || (four >= 2221 && four <= 2720)) return "mastercard";
  if (two === 34 || two === 37) return "amex";
  return "other";
}
