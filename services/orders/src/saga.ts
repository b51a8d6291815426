/**
 * The order saga's steps. Each step is one idempotent remote call; its result and the next
 * step are recorded in one transaction (store.record), so a crash anywhere repeats at most
 * the call in flight, which the callee answers as it did the first time.
 *
 *   RESERVE ─▶ AUTHORIZE ─▶ CAPTURE ─▶ COMMIT_STOCK ─▶ (order CONFIRMED)
 *      │           │           │            │
 *      └───────────┴───────────┴────────────┴─▶ RELEASE ─▶ VOID ─▶ [REFUND] ─▶ (order CANCELLED)
 *
 * CAPTURE runs before COMMIT_STOCK because a processor may refuse the capture: the stock
 * is then still only reserved and goes back with RELEASE, whereas a commit has no undo in
 * inventory's API. (A saga recorded at COMMIT_STOCK before CAPTURE, by an older release,
 * still finishes: each of the two steps goes on to the other until both are done.)
 *
 * Out of stock, an unknown product, a declined card, a declined capture or a customer's
 * cancellation start the compensation; so do RESERVE and AUTHORIZE failing transiently
 * SAGA_MAX_ATTEMPTS times.
 * VOID is skipped when no money can be held (the order never reached AUTHORIZE, or the
 * card was declined), and RELEASE when inventory refused the reservation (out of stock, an
 * unknown product): its refusals are final, so an out-of-stock order is CANCELLED in the
 * step that learns it, the first one, which PlaceOrder runs itself.
 * Later steps and the compensation retry transient failures until they succeed: after
 * CommitReservation the stock cannot be given back through inventory's API, and a
 * compensation that gave up would leave stock held or money taken. RELEASE is skipped
 * when the stock was committed; VOID learns an authorization's unknown outcome by repeating
 * it (same idempotency key) and voids what it finds; REFUND runs when VOID finds the
 * payment captured.
 *
 * Keys: inventory is idempotent on the order id; payments on `<order_id>:<operation>`.
 */
import { type CallOptions, type Client, Code, ConnectError } from "@connectrpc/connect";
import { errorInfosOf, type Logger } from "@meshmart/kit";
import type { InventoryService } from "@meshmart/kit/gen/meshmart/inventory/v1/inventory_service_pb.js";
import {
  DeclineCode,
  type Payment,
  PaymentStatus,
} from "@meshmart/kit/gen/meshmart/payments/v1/payments_pb.js";
import type { PaymentService } from "@meshmart/kit/gen/meshmart/payments/v1/payments_service_pb.js";
import type { CardVault } from "./card-vault.js";
import { type Amount, isZero } from "./pricing.js";
import type { SoldOutHints } from "./sold-out-hints.js";
import type {
  CancelCodeText,
  CancelPlan,
  OrderRecord,
  PaymentState,
  SagaChanges,
  SagaRow,
  SagaStep,
  Transition,
} from "./store.js";

/** What the steps need. */
export interface SagaDeps {
  inventory: Client<typeof InventoryService>;
  payments: Client<typeof PaymentService>;
  vault: CardVault;
  logger: Logger;
  /** Deadline of each remote call. */
  stepTimeoutMs: number;
  retryBaseMs: number;
  retryMaxMs: number;
  /** Attempts of RESERVE / AUTHORIZE before giving up (CANCEL_CODE_INTERNAL_ERROR). */
  maxAttempts: number;
  /** Inventory's recent refusals, which spare RESERVE the call for a sold-out product. */
  soldOut: SoldOutHints;
}

/** Turns a step's result into a transition, against the saga as it is when recorded. */
export type Decide = (saga: SagaRow) => Transition;

/** Payments idempotency keys: one per order and operation, so any retry is the same request. */
export const paymentKeys = {
  authorize: (orderId: string) => `${orderId}:authorize`,
  capture: (orderId: string) => `${orderId}:capture`,
  void: (orderId: string) => `${orderId}:void`,
  refund: (orderId: string) => `${orderId}:refund`,
};

/**
 * Failures worth retrying: the call may not have happened, or may succeed later.
 * Authentication and policy refusals are included: they mean a misconfigured mesh (the
 * saga's calls carry no user token), which an operator fixes, not a property of the order.
 */
const TRANSIENT = new Set<Code>([
  Code.Unavailable,
  Code.DeadlineExceeded,
  Code.Internal,
  Code.Unknown,
  Code.ResourceExhausted,
  Code.Aborted,
  Code.Canceled,
  Code.Unauthenticated,
  Code.PermissionDenied,
  Code.Unimplemented,
  Code.DataLoss,
]);

/** Whether `err` may go away on a retry. */
export function isTransient(err: ConnectError): boolean {
  return TRANSIENT.has(err.code);
}

/** Steps that stop at SAGA_MAX_ATTEMPTS: before them nothing is committed that forbids cancelling. */
const CAPPED: ReadonlySet<SagaStep> = new Set(["RESERVE", "AUTHORIZE"]);

/**
 * Decides what a customer's CancelOrder does to the saga. Up to the stock commit the order
 * can be unwound: at once when no step is running, or by the running step's worker when
 * it records its result. Once CommitReservation may have been sent, the units may have
 * left the warehouse and inventory has no undo, so the order can only be confirmed.
 */
export function planCancel(saga: SagaRow, inFlight: boolean): CancelPlan {
  switch (saga.step) {
    case "RESERVE":
    case "AUTHORIZE":
      return inFlight ? "flag" : "compensate";
    case "CAPTURE":
      // commit_sent: a saga of the older order of steps, which committed before capturing.
      if (saga.commit_sent) return "too_late";
      return inFlight ? "flag" : "compensate";
    case "COMMIT_STOCK":
      return saga.commit_sent ? "too_late" : "compensate";
    default:
      return "cancelling";
  }
}

/** Exponential backoff with jitter: half the delay fixed, half random. */
export function retryDelayMs(attempt: number, baseMs: number, maxMs: number): number {
  const exponential = Math.min(maxMs, baseMs * 2 ** Math.min(30, Math.max(0, attempt - 1)));
  return Math.round(exponential / 2 + (Math.random() * exponential) / 2);
}

/** A short description of a failure for the saga row and logs; never carries the card. */
function describe(err: ConnectError): string {
  return `${Code[err.code] ?? err.code}: ${err.rawMessage}`.slice(0, 500);
}

/**
 * Starts the compensation: release the stock (unless it was committed, which cannot be
 * undone), then void or refund, then cancel. A customer's cancellation, when requested,
 * wins over the step's own reason.
 */
function compensate(
  saga: SagaRow,
  code: CancelCodeText,
  reason: string,
  changes: SagaChanges = {},
): Transition {
  const stock = changes.stock_state ?? saga.stock_state;
  return {
    kind: "next",
    step: stock === "COMMITTED" ? "VOID" : "RELEASE",
    changes: {
      ...changes,
      cancel_code: saga.cancel_requested ? saga.cancel_code : code,
      cancel_reason: saga.cancel_requested ? saga.cancel_reason : reason,
    },
  };
}

/**
 * A forward step succeeded: go on, unless the customer cancelled meanwhile and the stock is
 * not committed (then only confirming is left).
 */
function forward(next: "AUTHORIZE" | "COMMIT_STOCK" | "CAPTURE", changes: SagaChanges): Decide {
  return (saga) =>
    saga.cancel_requested && (changes.stock_state ?? saga.stock_state) !== "COMMITTED"
      ? compensate(saga, "CUSTOMER_REQUESTED", "", changes)
      : { kind: "next", step: next, changes };
}

/**
 * CAPTURE or COMMIT_STOCK succeeded: the order is confirmed once the money is captured (or
 * there is none) and the stock committed, else the other of the two runs next.
 */
function settleForward(record: OrderRecord, changes: SagaChanges): Decide {
  return (saga) => {
    const stock = changes.stock_state ?? saga.stock_state;
    const paid = (changes.payment_state ?? saga.payment_state) === "CAPTURED";
    if (stock === "COMMITTED" && (paid || isZero(total(record)))) {
      return { kind: "confirm", changes };
    }
    return forward(stock === "COMMITTED" ? "CAPTURE" : "COMMIT_STOCK", changes)(saga);
  };
}

/** A step hit a business outcome that ends the order. */
function fail(code: CancelCodeText, reason: string, changes: SagaChanges = {}): Decide {
  return (saga) => compensate(saga, code, reason, changes);
}

/**
 * Inventory refused the reservation and recorded the order's as released (its refusals
 * are final), so no stock is held and there is nothing to release: the compensation
 * starts at the payment, which for an order at RESERVE means CANCELLED in this same
 * recorded step.
 */
function refused(record: OrderRecord, code: CancelCodeText, reason: string): Decide {
  return (saga) =>
    settlePayment(record, {
      stock_state: "RELEASED",
      cancel_code: saga.cancel_requested ? saga.cancel_code : code,
      cancel_reason: saga.cancel_requested ? saga.cancel_reason : reason,
    })(saga);
}

/**
 * A step failed transiently: retry with backoff. RESERVE and AUTHORIZE give up after
 * maxAttempts (or at once when the customer cancelled); every later step, and every
 * compensation step, retries until it succeeds, since giving up there would leave stock
 * or money out of balance.
 */
function retry(deps: SagaDeps, err: ConnectError, what: string): Decide {
  return (saga) => {
    const capped = CAPPED.has(saga.step);
    if (capped && saga.cancel_requested) return compensate(saga, "CUSTOMER_REQUESTED", "");
    if (capped && saga.attempts >= deps.maxAttempts) {
      deps.logger.error(
        { orderId: saga.order_id, step: saga.step, attempts: saga.attempts, error: describe(err) },
        "saga step kept failing; cancelling the order",
      );
      return compensate(
        saga,
        "INTERNAL_ERROR",
        `${what} kept failing; the order was not completed`,
      );
    }
    const log =
      saga.attempts === 1 || saga.attempts % 10 === 0
        ? deps.logger.warn.bind(deps.logger)
        : deps.logger.debug.bind(deps.logger);
    log(
      { orderId: saga.order_id, step: saga.step, attempt: saga.attempts, error: describe(err) },
      "saga step failed; retrying",
    );
    return {
      kind: "retry",
      delayMs: retryDelayMs(saga.attempts, deps.retryBaseMs, deps.retryMaxMs),
      error: describe(err),
    };
  };
}

/**
 * Whether VOID would cancel without calling payments: nothing is charged, or no money is
 * held and none may be (no authorization was ever sent, or its outcome already released
 * it).
 */
export function nothingToVoid(saga: SagaRow, record: OrderRecord): boolean {
  if (isZero(total(record))) return true;
  switch (saga.payment_state) {
    case "NONE":
      return !saga.auth_sent;
    case "DECLINED":
    case "VOIDED":
    case "REFUNDED":
      return true;
    default:
      return false;
  }
}

/**
 * The stock is settled: on to VOID, or, when it would have nothing to do (an order that
 * never reached its authorization, as every out-of-stock one), straight to CANCELLED, one
 * recorded step sooner. Decided against the saga as recorded.
 */
function settlePayment(record: OrderRecord, changes: SagaChanges): Decide {
  return (saga) =>
    nothingToVoid(saga, record)
      ? { kind: "cancel", changes }
      : { kind: "next", step: "VOID", changes };
}

function total(record: OrderRecord): Amount {
  return { units: record.order.total_units, nanos: record.order.total_nanos };
}

/** A unit count from ErrorInfo metadata; undefined when it is not one. */
function unitsOf(text: string | undefined): bigint | undefined {
  if (text === undefined || !/^\d+$/.test(text)) return undefined;
  return BigInt(text);
}

function skuOf(record: OrderRecord, productId: string | undefined): string {
  return record.items.find((i) => i.product_id === productId)?.sku ?? productId ?? "an item";
}

function declineText(payment: Payment): string {
  if (payment.failureReason !== "") return payment.failureReason;
  const name = DeclineCode[payment.declineCode];
  return name === undefined ? "card declined" : name.toLowerCase().replaceAll("_", " ");
}

const paymentStates: Partial<Record<PaymentStatus, PaymentState>> = {
  [PaymentStatus.AUTHORIZED]: "AUTHORIZED",
  [PaymentStatus.CAPTURED]: "CAPTURED",
  [PaymentStatus.PARTIALLY_REFUNDED]: "CAPTURED",
  [PaymentStatus.VOIDED]: "VOIDED",
  [PaymentStatus.REFUNDED]: "REFUNDED",
  [PaymentStatus.FAILED]: "DECLINED",
};

/**
 * Runs the saga's current step once: the step's idempotent remote call under its own
 * deadline, then a decision for the transition. Never throws: every failure is a decision.
 */
export async function runStep(saga: SagaRow, record: OrderRecord, deps: SagaDeps): Promise<Decide> {
  const orderId = saga.order_id;
  const call: CallOptions = {
    timeoutMs: deps.stepTimeoutMs,
    headers: { "x-request-id": `${orderId}:${saga.step.toLowerCase()}` },
  };
  const { inventory, payments } = deps;
  const reservationItems = record.items.map((i) => ({
    productId: i.product_id,
    quantity: i.quantity,
  }));

  /** AuthorizePayment with the sealed card, as AUTHORIZE does and VOID repeats to learn an unknown outcome. */
  const authorize = async (): Promise<Payment | ConnectError | "no_card"> => {
    if (saga.card_sealed === null) return "no_card";
    let card: ReturnType<CardVault["open"]>;
    try {
      card = deps.vault.open(saga.card_sealed, orderId);
    } catch {
      // Wrong SAGA_CARD_KEY (rotated without keeping the old one) or a damaged row.
      deps.logger.error({ orderId }, "the sealed card cannot be opened with SAGA_CARD_KEY");
      return "no_card";
    }
    try {
      const res = await payments.authorizePayment(
        {
          idempotencyKey: paymentKeys.authorize(orderId),
          orderId,
          amount: { currencyCode: record.order.currency, ...total(record) },
          card,
        },
        call,
      );
      if (res.payment === undefined) throw new Error("AuthorizePayment answered without a payment");
      return res.payment;
    } catch (reason) {
      return ConnectError.from(reason);
    }
  };

  try {
    switch (saga.step) {
      case "RESERVE": {
        // PlaceOrder screened the order against the sold-out hints before it existed (one
        // it refused was created CANCELLED, with no saga to run); a refusal may have come
        // in since. Only a first attempt may go without the call: after a lost answer an
        // earlier call may still be in inventory, and only inventory's own (final) refusal
        // makes sure it holds nothing.
        const short =
          saga.attempts === 1 ? deps.soldOut.shortage(reservationItems, orderId) : undefined;
        if (short !== undefined) {
          return refused(record, "OUT_OF_STOCK", `out of stock: ${skuOf(record, short.productId)}`);
        }
        try {
          await inventory.reserveStock({ orderId, items: reservationItems }, call);
          deps.soldOut.reserved(reservationItems.map((i) => i.productId));
          return forward("AUTHORIZE", { stock_state: "RESERVED" });
        } catch (reason) {
          const err = ConnectError.from(reason);
          if (isTransient(err)) return retry(deps, err, "reserving stock");
          const [info] = errorInfosOf(err);
          if (info?.reason === "INSUFFICIENT_STOCK") {
            const productId = info.metadata.product_id;
            const available = unitsOf(info.metadata.available);
            if (productId !== undefined && available !== undefined) {
              deps.soldOut.refused(productId, available);
            }
            return refused(record, "OUT_OF_STOCK", `out of stock: ${skuOf(record, productId)}`);
          }
          if (err.code === Code.NotFound) {
            return refused(
              record,
              "PRODUCT_UNAVAILABLE",
              `product unavailable: ${skuOf(record, info?.metadata.product_id)}`,
            );
          }
          if (info?.reason === "RESERVATION_RELEASED") {
            // An earlier attempt's answer was lost (its claim lapsed under load) and
            // inventory had refused it, which is final: nothing is held. (It could also be
            // a reservation made then and expired since; given back all the same.)
            return refused(record, "OUT_OF_STOCK", "out of stock");
          }
          deps.logger.error({ orderId, error: describe(err) }, "ReserveStock refused the order");
          return fail("INTERNAL_ERROR", "the stock could not be reserved");
        }
      }

      case "AUTHORIZE": {
        // An order of free products has nothing to charge.
        if (isZero(total(record))) return forward("COMMIT_STOCK", { wipe_card: true });
        const outcome = await authorize();
        if (outcome === "no_card") {
          return fail("INTERNAL_ERROR", "the payment details could not be read", {
            wipe_card: true,
          });
        }
        if (outcome instanceof ConnectError) {
          if (isTransient(outcome)) return retry(deps, outcome, "authorizing the payment");
          deps.logger.error(
            { orderId, error: describe(outcome) },
            "AuthorizePayment refused the order",
          );
          // The card stays: VOID repeats the authorization to learn whether a hold exists.
          return fail("INTERNAL_ERROR", "the payment could not be authorized");
        }
        const state = paymentStates[outcome.status];
        if (state === "DECLINED") {
          return fail("PAYMENT_DECLINED", `payment declined: ${declineText(outcome)}`, {
            payment_state: "DECLINED",
            payment_id: outcome.id,
            wipe_card: true,
          });
        }
        const changes: SagaChanges = {
          payment_state: state ?? "AUTHORIZED",
          payment_id: outcome.id,
          wipe_card: true,
        };
        if (state === "AUTHORIZED" || state === "CAPTURED") return forward("CAPTURE", changes);
        return fail("INTERNAL_ERROR", "the payment was not authorized", changes);
      }

      case "COMMIT_STOCK":
        try {
          await inventory.commitReservation({ orderId }, call);
          return settleForward(record, { stock_state: "COMMITTED" });
        } catch (reason) {
          const err = ConnectError.from(reason);
          if (isTransient(err)) return retry(deps, err, "committing the stock");
          // Not committed (NOT_FOUND, or released, e.g. expired by inventory's sweeper):
          // the order can still be unwound.
          deps.logger.warn({ orderId, error: describe(err) }, "the reservation was lost");
          return fail("INTERNAL_ERROR", "the stock reservation expired before the order completed");
        }

      case "CAPTURE": {
        if (saga.payment_state === "CAPTURED" || isZero(total(record))) {
          return settleForward(record, {});
        }
        if (saga.payment_id === null) {
          deps.logger.error({ orderId }, "CAPTURE without an authorized payment");
          return fail("INTERNAL_ERROR", "the payment could not be captured");
        }
        try {
          await payments.capturePayment(
            { paymentId: saga.payment_id, idempotencyKey: paymentKeys.capture(orderId) },
            call,
          );
          return settleForward(record, { payment_state: "CAPTURED" });
        } catch (reason) {
          const err = ConnectError.from(reason);
          if (isTransient(err)) return retry(deps, err, "capturing the payment");
          // Compensated like any failure: the stock, still only reserved, is released and
          // the authorization voided. Only a saga that committed before capturing (the
          // older order of steps) leaves stock behind, for an operator to restock.
          if (saga.stock_state === "COMMITTED") {
            deps.logger.error(
              { orderId, error: describe(err) },
              "the payment could not be captured after the stock was committed; restock manually",
            );
          }
          const [info] = errorInfosOf(err);
          if (info?.reason === "CAPTURE_DECLINED") {
            const why = (info.metadata.decline_code ?? "card_declined").replaceAll("_", " ");
            return fail("PAYMENT_DECLINED", `payment declined at capture: ${why}`);
          }
          deps.logger.error({ orderId, error: describe(err) }, "CapturePayment refused the order");
          return fail("INTERNAL_ERROR", "the payment could not be captured");
        }
      }

      case "RELEASE":
        try {
          await inventory.releaseReservation({ orderId }, call);
          return settlePayment(record, { stock_state: "RELEASED" });
        } catch (reason) {
          const err = ConnectError.from(reason);
          if (err.code === Code.FailedPrecondition && saga.commit_sent) {
            deps.logger.error(
              { orderId },
              "the reservation of a cancelled order was committed; restock manually",
            );
            return settlePayment(record, { stock_state: "COMMITTED" });
          }
          return retry(deps, err, "releasing the stock");
        }

      case "VOID": {
        if (isZero(total(record))) return () => ({ kind: "cancel", changes: { wipe_card: true } });
        if (saga.payment_state === "CAPTURED") return () => ({ kind: "next", step: "REFUND" });
        if (saga.payment_state === "NONE" && saga.auth_sent) {
          // An authorization was sent without a recorded answer: repeating it (same key,
          // same request) returns what payments decided, or holds now so it can be voided.
          const outcome = await authorize();
          if (outcome === "no_card") return () => ({ kind: "cancel" });
          if (outcome instanceof ConnectError) {
            if (outcome.code === Code.FailedPrecondition || outcome.code === Code.InvalidArgument) {
              deps.logger.error(
                { orderId, error: describe(outcome) },
                "could not learn the outcome of the authorization; check payments for a hold",
              );
              return () => ({ kind: "cancel", changes: { wipe_card: true } });
            }
            return retry(deps, outcome, "learning the authorization's outcome");
          }
          const state = paymentStates[outcome.status] ?? "AUTHORIZED";
          const changes: SagaChanges = {
            payment_state: state,
            payment_id: outcome.id,
            wipe_card: true,
          };
          if (state === "DECLINED" || state === "VOIDED" || state === "REFUNDED") {
            return () => ({ kind: "cancel", changes });
          }
          // Known now; the next round voids (or refunds) it.
          return () => ({ kind: "next", step: "VOID", changes });
        }
        if (saga.payment_state !== "AUTHORIZED" || saga.payment_id === null) {
          return () => ({ kind: "cancel" });
        }
        try {
          await payments.voidPayment(
            {
              paymentId: saga.payment_id,
              idempotencyKey: paymentKeys.void(orderId),
              reason: saga.cancel_reason.slice(0, 500),
            },
            call,
          );
          return () => ({ kind: "cancel", changes: { payment_state: "VOIDED" } });
        } catch (reason) {
          const err = ConnectError.from(reason);
          if (err.code === Code.NotFound) return () => ({ kind: "cancel" });
          if (err.code !== Code.FailedPrecondition) return retry(deps, err, "voiding the payment");
          // Captured (refund it instead) or failed: ask payments which.
          try {
            const { payment } = await payments.getPayment({ paymentId: saga.payment_id }, call);
            const state = payment === undefined ? undefined : paymentStates[payment.status];
            if (state === "CAPTURED") {
              return () => ({
                kind: "next",
                step: "REFUND",
                changes: { payment_state: "CAPTURED" },
              });
            }
            return () => ({
              kind: "cancel",
              changes: state === undefined ? {} : { payment_state: state },
            });
          } catch (getReason) {
            return retry(deps, ConnectError.from(getReason), "voiding the payment");
          }
        }
      }

      case "REFUND": {
        if (saga.payment_id === null) return () => ({ kind: "cancel" });
        try {
          await payments.refundPayment(
            {
              paymentId: saga.payment_id,
              idempotencyKey: paymentKeys.refund(orderId),
              reason: saga.cancel_reason.slice(0, 500),
            },
            call,
          );
          return () => ({ kind: "cancel", changes: { payment_state: "REFUNDED" } });
        } catch (reason) {
          const err = ConnectError.from(reason);
          if (err.code === Code.NotFound || err.code === Code.FailedPrecondition) {
            // Nothing (more) to refund.
            deps.logger.warn(
              { orderId, error: describe(err) },
              "refund refused; nothing to refund",
            );
            return () => ({ kind: "cancel" });
          }
          return retry(deps, err, "refunding the payment");
        }
      }

      case "DONE":
        return () => ({ kind: "cancel" });
    }
  } catch (reason) {
    // A bug in a step (not a downstream failure): retry later rather than lose the saga.
    deps.logger.error({ err: reason, orderId, step: saga.step }, "saga step threw");
    return retry(deps, new ConnectError("step failed", Code.Internal), "the order");
  }
}
