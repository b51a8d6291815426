import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import {
  type AuthorizeOutcome,
  type CaptureOutcome,
  type CardInput,
  type PaymentProvider,
  ProviderUnavailableError,
} from "./payment-provider.js";

/** The test cards of meshmart.common.v1.Card and what they do. */
export const TEST_CARDS = {
  approved: "4242424242424242",
  declined: "4000000000000002",
  insufficientFunds: "4000000000009995",
  /** Authorized, but every capture of the authorization is declined. */
  captureDeclined: "4000000000000341",
} as const;

/**
 * Prefix of the authorizations of TEST_CARDS.captureDeclined. The fake keeps no state, and
 * payments may restart between authorizing and capturing, so the reference itself says
 * that its capture will be declined.
 */
const CAPTURE_DECLINED_PREFIX = "fake_auth_nocapture_";

/** Options for {@link createFakePaymentProvider}. */
export interface FakeProviderOptions {
  /** Added to every call (default 0): lets chaos tests kill payments mid-authorization. */
  latencyMs?: number;
  /** The clock expiry dates are judged by. */
  now?: () => Date;
}

/**
 * A card processor in memory, deciding by test card number (see card.proto): 4242… is
 * approved, 4000000000000002 declined, 4000000000009995 declined for insufficient funds,
 * 4000000000000341 approved but its capture declined, any other number declined, a past
 * expiry declined as expired (any CVC is accepted). Void and refund of an authorization it
 * issued always succeed, and so does its capture, except for 4000000000000341's.
 */
export function createFakePaymentProvider(options: FakeProviderOptions = {}): PaymentProvider {
  const latencyMs = options.latencyMs ?? 0;
  const now = options.now ?? (() => new Date());
  const wait = async (signal: AbortSignal | undefined) => {
    if (latencyMs === 0) {
      if (signal?.aborted) throw new ProviderUnavailableError("the call was cancelled");
      return;
    }
    try {
      await sleep(latencyMs, undefined, signal === undefined ? {} : { signal });
    } catch {
      throw new ProviderUnavailableError("the call was cancelled before the processor answered");
    }
  };
  const issued = (reference: string) => {
    // Only ever a fake_auth_ reference reaches here from payments' own rows.
    if (!reference.startsWith("fake_auth_")) {
      throw new Error("unknown authorization reference");
    }
  };
  return {
    async authorize({ card, signal }) {
      await wait(signal);
      return decide(card, now());
    },
    async capture({ reference, signal }): Promise<CaptureOutcome> {
      await wait(signal);
      issued(reference);
      if (reference.startsWith(CAPTURE_DECLINED_PREFIX)) {
        return { captured: false, decline: "card_declined", message: "card declined at capture" };
      }
      return { captured: true, reference: `fake_cap_${randomUUID()}` };
    },
    async void({ reference, signal }) {
      await wait(signal);
      issued(reference);
      return { reference: `fake_void_${randomUUID()}` };
    },
    async refund({ reference, signal }) {
      await wait(signal);
      issued(reference);
      return { reference: `fake_ref_${randomUUID()}` };
    },
  };
}

function decide(card: CardInput, today: Date): AuthorizeOutcome {
  // A card is valid through the last day of its expiry month.
  const expired =
    card.expYear < today.getUTCFullYear() ||
    (card.expYear === today.getUTCFullYear() && card.expMonth < today.getUTCMonth() + 1);
  if (expired) return { approved: false, decline: "expired_card", message: "expired card" };
  switch (card.number) {
    case TEST_CARDS.approved:
      return { approved: true, reference: `fake_auth_${randomUUID()}` };
    case TEST_CARDS.captureDeclined:
      return { approved: true, reference: `${CAPTURE_DECLINED_PREFIX}${randomUUID()}` };
    case TEST_CARDS.insufficientFunds:
      return { approved: false, decline: "insufficient_funds", message: "insufficient funds" };
    default:
      return { approved: false, decline: "card_declined", message: "card declined" };
  }
}
