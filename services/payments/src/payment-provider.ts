/**
 * The card processor (PSP) payments talks to. Payments depends on this interface only;
 * `fake-payment-provider.ts` implements it with test cards, a real PSP client would too.
 *
 * Implementations must never log, or put into an error, the card number or CVC.
 */
export interface PaymentProvider {
  /** Holds an amount on a card. A decline is an outcome, not an error. */
  authorize(input: AuthorizeInput): Promise<AuthorizeOutcome>;
  /**
   * Charges an authorization (the whole amount). A refusal is an outcome, not an error:
   * the authorization stays open, for the caller to void.
   */
  capture(input: CaptureInput): Promise<CaptureOutcome>;
  /** Releases an authorization without charging. */
  void(input: VoidInput): Promise<ProviderReceipt>;
  /** Returns money of a captured authorization. */
  refund(input: RefundInput): Promise<ProviderReceipt>;
}

/** Why a processor declined, as payments stores it. */
export type DeclineReason =
  | "card_declined"
  | "insufficient_funds"
  | "expired_card"
  | "incorrect_cvc"
  | "processing_error";

/** A card as the customer entered it. Lives only in memory for the duration of one call. */
export interface CardInput {
  number: string;
  expMonth: number;
  expYear: number;
  cvc: string;
  holderName: string;
}

/**
 * Every call carries the idempotency key of the RPC it serves, so a processor that dedupes
 * on it (real ones do) answers a retry after a lost response with the first outcome.
 */
interface ProviderCall {
  idempotencyKey: string;
  /** Aborted when the RPC's caller gave up or its deadline passed. */
  signal?: AbortSignal;
}

export interface AuthorizeInput extends ProviderCall {
  orderId: string;
  amountMinor: bigint;
  currency: string;
  card: CardInput;
}

export type AuthorizeOutcome =
  | { approved: true; reference: string }
  | { approved: false; decline: DeclineReason; message: string };

export interface CaptureInput extends ProviderCall {
  /** The authorization's reference. */
  reference: string;
  amountMinor: bigint;
  currency: string;
}

export interface VoidInput extends ProviderCall {
  reference: string;
}

export interface RefundInput extends ProviderCall {
  reference: string;
  amountMinor: bigint;
  currency: string;
}

/**
 * What a capture came to. Processors can refuse to charge an authorization they issued
 * (the issuer declines the charge, the hold lapsed), so payments must handle it.
 */
export type CaptureOutcome =
  | { captured: true; reference: string }
  | { captured: false; decline: DeclineReason; message: string };

/** The processor's id for what it did. */
export interface ProviderReceipt {
  reference: string;
}

/**
 * The processor could not be reached or did not answer: nothing is known to have happened,
 * and a retry with the same idempotency key is safe. Payments answers UNAVAILABLE.
 */
export class ProviderUnavailableError extends Error {
  override readonly name = "ProviderUnavailableError";
}
