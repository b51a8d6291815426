import { createHash, randomUUID } from "node:crypto";
import {
  create,
  type DescField,
  type DescMessage,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { errorWithInfo, type Logger, newEvent } from "@meshmart/kit";
import { ViolationsSchema } from "@meshmart/kit/gen/buf/validate/validate_pb.js";
import { type Money, MoneySchema } from "@meshmart/kit/gen/meshmart/common/v1/money_pb.js";
import {
  PaymentAuthorizedSchema,
  PaymentCapturedSchema,
  PaymentFailedSchema,
  PaymentRefundedSchema,
  PaymentVoidedSchema,
} from "@meshmart/kit/gen/meshmart/payments/v1/events_pb.js";
import {
  AuthorizePaymentRequestSchema,
  AuthorizePaymentResponseSchema,
  CapturePaymentRequestSchema,
  CapturePaymentResponseSchema,
  type PaymentService,
  RefundPaymentRequestSchema,
  RefundPaymentResponseSchema,
  VoidPaymentRequestSchema,
  VoidPaymentResponseSchema,
} from "@meshmart/kit/gen/meshmart/payments/v1/payments_service_pb.js";
import { summarizeCard } from "./card.js";
import { authorizePosting, capturePosting, refundPosting, voidPosting } from "./ledger.js";
import { minorDigits, toMinorUnits } from "./money.js";
import { toPayment, toRefund } from "./payment-mapper.js";
import { type PaymentProvider, ProviderUnavailableError } from "./payment-provider.js";
import { authorizeRefund, type CallerPolicy } from "./peer.js";
import type { IdempotentOperation, PaymentRow, PaymentsStore, PaymentsTx } from "./store.js";

/** What the payments handlers need. */
export interface PaymentsDeps {
  store: PaymentsStore;
  provider: PaymentProvider;
  policy: CallerPolicy;
  logger: Logger;
}

/** The ErrorInfo domain of payments' reasons. */
export const ERROR_DOMAIN = "payments.meshmart";

/**
 * ErrorInfo reason of CapturePayment's FAILED_PRECONDITION when the processor declined the
 * capture (metadata payment_id, decline_code): the payment is still AUTHORIZED.
 */
export const CAPTURE_DECLINED = "CAPTURE_DECLINED";

/** Statuses in which the payment was captured (refunds may have followed). */
const CAPTURED: readonly PaymentRow["status"][] = ["captured", "partially_refunded", "refunded"];

/**
 * The PaymentService. Every mutating RPC runs as one database transaction that first claims
 * its idempotency key (see PaymentsStore.idempotent), then calls the card processor, then
 * writes the payment, its ledger posting and its event. So a payment, its money movements
 * and its announcement commit together or not at all, and a retry never reaches the card
 * twice. Who may call: see peer.ts.
 */
export function createPaymentsHandlers(deps: PaymentsDeps): ServiceImpl<typeof PaymentService> {
  const { store, provider, policy, logger } = deps;

  /**
   * Runs `work` under the idempotency key and answers with its (possibly stored) response;
   * `read` (locks and reads) goes to the database with the key's claim. What the work did
   * is logged once its transaction committed, never for a rolled-back try.
   */
  async function once<S extends DescMessage, R>(
    operation: IdempotentOperation,
    key: string,
    requestHash: string,
    schema: S,
    read: (tx: PaymentsTx) => Promise<R>,
    work: (
      tx: PaymentsTx,
      read: R,
    ) => Promise<{ response: MessageShape<S>; paymentId: string; log?: LogLine }>,
  ): Promise<MessageShape<S>> {
    let log: LogLine | undefined;
    const outcome = await store.idempotent({ operation, key, requestHash }, read, async (tx, r) => {
      const done = await work(tx, r);
      log = done.log;
      return { response: toBinary(schema, done.response), paymentId: done.paymentId };
    });
    if (outcome.kind === "done" && log !== undefined) logger.info(log.fields, log.msg);
    if (outcome.kind === "conflict") {
      throw new ConnectError(
        `idempotency_key was already used for a different ${operation} request; use a new key`,
        Code.FailedPrecondition,
      );
    }
    return fromBinary(schema, outcome.response);
  }

  /** Turns "the processor did not answer" into UNAVAILABLE: nothing happened, retry is safe. */
  async function callProvider<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (reason) {
      if (reason instanceof ProviderUnavailableError) {
        logger.warn({ err: reason.message }, "card processor unavailable");
        throw new ConnectError(
          "the card processor is unavailable; retry with the same idempotency_key",
          Code.Unavailable,
        );
      }
      throw reason;
    }
  }

  return {
    async authorizePayment(req, ctx) {
      const { card, amount } = req;
      // Both are required by the proto's rules; the validator rejected a request without them.
      if (card === undefined || amount === undefined) {
        throw new ConnectError("card and amount are required", Code.InvalidArgument);
      }
      const amountMinor = minorUnitsOf(amount, [AuthorizePaymentRequestSchema.field.amount]);
      const summary = summarizeCard(card.number);
      // The canonical request for the idempotency hash leaves out the key, the CVC and the card
      // number (keeping its last4 and brand): a hash of a card number is as good as the number
      // to anyone who can enumerate card numbers, so none is ever stored.
      const requestHash = hashOf(
        "authorize",
        AuthorizePaymentRequestSchema,
        create(AuthorizePaymentRequestSchema, {
          ...req,
          idempotencyKey: "",
          card: { ...card, number: `${summary.brand}/${summary.last4}`, cvc: "" },
        }),
      );
      return once(
        "authorize",
        req.idempotencyKey,
        requestHash,
        AuthorizePaymentResponseSchema,
        // The live payment is read after the lock is granted (a statement of its own, so
        // its snapshot is taken then): an authorization that committed meanwhile is seen.
        (tx) => {
          const locked = tx.lockOrder(req.orderId);
          const live = tx.livePaymentOfOrder(req.orderId);
          return locked.then(() => live);
        },
        async (tx, live) => {
          if (live !== undefined) {
            throw new ConnectError(
              `order ${req.orderId} already has payment ${live.id} (${live.status}); an order is authorized at most once`,
              Code.FailedPrecondition,
            );
          }
          const outcome = await callProvider(() =>
            provider.authorize({
              idempotencyKey: req.idempotencyKey,
              orderId: req.orderId,
              amountMinor,
              currency: amount.currencyCode,
              card: {
                number: card.number,
                expMonth: card.expMonth,
                expYear: card.expYear,
                cvc: card.cvc,
                holderName: card.holderName,
              },
              signal: ctx.signal,
            }),
          );
          const row = tx.insertPayment({
            id: randomUUID(),
            order_id: req.orderId,
            status: outcome.approved ? "authorized" : "failed",
            currency: amount.currencyCode,
            amount_minor: amountMinor,
            card_last4: summary.last4,
            card_brand: summary.brand,
            decline_code: outcome.approved ? null : outcome.decline,
            failure_reason: outcome.approved ? "" : outcome.message,
            psp_reference: outcome.approved ? outcome.reference : null,
          });
          const payment = toPayment({ payment: row, refunds: [] });
          const common = {
            paymentId: row.id,
            orderId: row.order_id,
            amount: payment.amount,
            payment,
          };
          if (outcome.approved) {
            tx.post(row.id, authorizePosting(amountMinor, row.currency));
            await tx.publish([newEvent(PaymentAuthorizedSchema, common)]);
          } else {
            await tx.publish([
              newEvent(PaymentFailedSchema, { ...common, declineCode: payment.declineCode }),
            ]);
          }
          return {
            response: create(AuthorizePaymentResponseSchema, { payment }),
            paymentId: row.id,
            log: transition(row, outcome.approved ? "payment authorized" : "payment declined", {
              card_last4: row.card_last4,
              ...(row.decline_code === null ? {} : { decline_code: row.decline_code }),
            }),
          };
        },
      );
    },

    async capturePayment(req, ctx) {
      const requestHash = hashOf("capture", CapturePaymentRequestSchema, {
        ...req,
        idempotencyKey: "",
      });
      return once(
        "capture",
        req.idempotencyKey,
        requestHash,
        CapturePaymentResponseSchema,
        (tx) => tx.lockPayment(req.paymentId),
        async (tx, locked) => {
          let row = found(locked, req.paymentId);
          if (row.status === "voided" || row.status === "failed") {
            throw new ConnectError(
              `payment ${row.id} is ${row.status} and cannot be captured`,
              Code.FailedPrecondition,
            );
          }
          // Captured before (under another key): answered unchanged, nothing moves.
          const capturing = row.status === "authorized";
          if (capturing) {
            const outcome = await callProvider(() =>
              provider.capture({
                idempotencyKey: req.idempotencyKey,
                reference: referenceOf(row),
                amountMinor: row.amount_minor,
                currency: row.currency,
                signal: ctx.signal,
              }),
            );
            if (!outcome.captured) {
              // Nothing moved: the payment stays AUTHORIZED, its hold open until the caller
              // voids it (the saga's compensation does). Nothing is recorded either, so a
              // retry asks the processor again, which answers it as before.
              logger.warn(
                { payment_id: row.id, order_id: row.order_id, decline_code: outcome.decline },
                "payment capture declined",
              );
              throw errorWithInfo(
                `payment ${row.id} could not be captured: ${outcome.message}; void it`,
                Code.FailedPrecondition,
                {
                  reason: CAPTURE_DECLINED,
                  domain: ERROR_DOMAIN,
                  metadata: { payment_id: row.id, decline_code: outcome.decline },
                },
              );
            }
            row = tx.updatePayment(row, {
              status: "captured",
              captured_minor: row.amount_minor,
              refunded_minor: 0n,
            });
            tx.post(row.id, capturePosting(row.amount_minor, row.currency));
          }
          // An authorized payment has no refunds yet; one captured before may have some.
          const refunds = capturing ? [] : await tx.refundsOf(row.id);
          const payment = toPayment({ payment: row, refunds });
          if (capturing) {
            await tx.publish([
              newEvent(PaymentCapturedSchema, {
                paymentId: row.id,
                orderId: row.order_id,
                amount: payment.capturedAmount,
                payment,
              }),
            ]);
          }
          return {
            response: create(CapturePaymentResponseSchema, { payment }),
            paymentId: row.id,
            ...(capturing ? { log: transition(row, "payment captured") } : {}),
          };
        },
      );
    },

    async voidPayment(req, ctx) {
      const requestHash = hashOf("void", VoidPaymentRequestSchema, { ...req, idempotencyKey: "" });
      return once(
        "void",
        req.idempotencyKey,
        requestHash,
        VoidPaymentResponseSchema,
        (tx) => tx.lockPayment(req.paymentId),
        async (tx, locked) => {
          let row = found(locked, req.paymentId);
          if (CAPTURED.includes(row.status)) {
            throw new ConnectError(
              `payment ${row.id} was captured; refund it instead of voiding`,
              Code.FailedPrecondition,
            );
          }
          if (row.status === "failed") {
            throw new ConnectError(
              `payment ${row.id} was declined; there is no authorization to void`,
              Code.FailedPrecondition,
            );
          }
          const voiding = row.status === "authorized";
          if (voiding) {
            await callProvider(() =>
              provider.void({
                idempotencyKey: req.idempotencyKey,
                reference: referenceOf(row),
                signal: ctx.signal,
              }),
            );
            row = tx.updatePayment(row, {
              status: "voided",
              captured_minor: 0n,
              refunded_minor: 0n,
            });
            tx.post(row.id, voidPosting(row.amount_minor, row.currency, req.reason));
          }
          const payment = toPayment({ payment: row, refunds: [] });
          if (voiding) {
            await tx.publish([
              newEvent(PaymentVoidedSchema, {
                paymentId: row.id,
                orderId: row.order_id,
                amount: payment.amount,
                payment,
              }),
            ]);
          }
          return {
            response: create(VoidPaymentResponseSchema, { payment }),
            paymentId: row.id,
            ...(voiding ? { log: transition(row, "payment voided") } : {}),
          };
        },
      );
    },

    async refundPayment(req, ctx) {
      authorizeRefund(ctx, policy);
      const requestHash = hashOf("refund", RefundPaymentRequestSchema, {
        ...req,
        idempotencyKey: "",
      });
      return once(
        "refund",
        req.idempotencyKey,
        requestHash,
        RefundPaymentResponseSchema,
        (tx) => tx.lockPayment(req.paymentId),
        async (tx, locked) => {
          const row = found(locked, req.paymentId);
          if (req.amount !== undefined && req.amount.currencyCode !== row.currency) {
            throw invalidField(
              [RefundPaymentRequestSchema.field.amount, MoneySchema.field.currencyCode],
              "amount.currency_matches",
              `amount must be in the payment's currency ${row.currency}`,
            );
          }
          if (row.status !== "captured" && row.status !== "partially_refunded") {
            throw new ConnectError(
              `payment ${row.id} is ${row.status}; only a captured payment can be refunded`,
              Code.FailedPrecondition,
            );
          }
          const left = row.captured_minor - row.refunded_minor;
          const amountMinor =
            req.amount === undefined
              ? left
              : minorUnitsOf(req.amount, [RefundPaymentRequestSchema.field.amount]);
          if (amountMinor > left) {
            throw new ConnectError(
              `refund of ${formatMinor(amountMinor, row.currency)} exceeds the ${formatMinor(left, row.currency)} left to refund`,
              Code.FailedPrecondition,
            );
          }
          const receipt = await callProvider(() =>
            provider.refund({
              idempotencyKey: req.idempotencyKey,
              reference: referenceOf(row),
              amountMinor,
              currency: row.currency,
              signal: ctx.signal,
            }),
          );
          const refund = await tx.insertRefund({
            id: randomUUID(),
            payment_id: row.id,
            currency: row.currency,
            amount_minor: amountMinor,
            reason: req.reason,
            psp_reference: receipt.reference,
          });
          const refunded = row.refunded_minor + amountMinor;
          const updated = tx.updatePayment(row, {
            status: refunded === row.captured_minor ? "refunded" : "partially_refunded",
            captured_minor: row.captured_minor,
            refunded_minor: refunded,
          });
          tx.post(row.id, refundPosting(amountMinor, row.currency, req.reason, refund.id));
          const payment = toPayment({ payment: updated, refunds: await tx.refundsOf(row.id) });
          const apiRefund = toRefund(refund);
          await tx.publish([
            newEvent(PaymentRefundedSchema, {
              paymentId: row.id,
              orderId: row.order_id,
              amount: apiRefund.amount,
              payment,
              refundId: refund.id,
            }),
          ]);
          return {
            response: create(RefundPaymentResponseSchema, { payment, refund: apiRefund }),
            paymentId: row.id,
            log: transition(updated, "payment refunded", { refund_id: refund.id }),
          };
        },
      );
    },

    async getPayment(req) {
      const record = await store.getPayment(req.paymentId);
      if (record === undefined) throw notFound(req.paymentId);
      return { payment: toPayment(record) };
    },
  };
}

/** A line to log once the transaction that did it committed. */
interface LogLine {
  fields: Record<string, unknown>;
  msg: string;
}

/** The log line of a payment's state change: ids and the new status, never card data. */
function transition(row: PaymentRow, msg: string, extra: Record<string, string> = {}): LogLine {
  return {
    fields: { payment_id: row.id, order_id: row.order_id, status: row.status, ...extra },
    msg,
  };
}

/** The payment `lockPayment` found; NOT_FOUND when there is none. */
function found(row: PaymentRow | undefined, id: string): PaymentRow {
  if (row === undefined) throw notFound(id);
  return row;
}

/** The processor's authorization id, which every payment past a decline has. */
function referenceOf(row: PaymentRow): string {
  if (row.psp_reference === null) throw new Error(`payment ${row.id} has no processor reference`);
  return row.psp_reference;
}

/**
 * SHA-256 of the canonical request: its protobuf binary (fields in number order, defaults
 * left out) with the idempotency key cleared, prefixed by the RPC so equal bytes of two
 * RPCs never compare equal.
 */
function hashOf<S extends DescMessage>(
  operation: IdempotentOperation,
  schema: S,
  request: MessageInitShape<S>,
): string {
  return createHash("sha256")
    .update(`${operation}\n`)
    .update(toBinary(schema, create(schema, request)))
    .digest("hex");
}

/** `money` in minor units; INVALID_ARGUMENT (naming the field) when finer than its currency allows. */
function minorUnitsOf(money: Money, path: DescField[]): bigint {
  const minor = toMinorUnits(money);
  if (minor === undefined) {
    throw invalidField(
      [...path, MoneySchema.field.nanos],
      "amount.minor_units",
      `amount must be a whole number of ${money.currencyCode}'s smallest unit`,
    );
  }
  return minor;
}

/** INVALID_ARGUMENT with a buf.validate.Violations detail, as the validator reports its rules. */
function invalidField(path: DescField[], ruleId: string, message: string): ConnectError {
  const field = {
    elements: path.map((f) => ({
      fieldNumber: f.number,
      fieldName: f.name,
      fieldType: f.proto.type,
    })),
  };
  return new ConnectError(message, Code.InvalidArgument, undefined, [
    { desc: ViolationsSchema, value: { violations: [{ field, ruleId, message }] } },
  ]);
}

/** 1250n EUR → "12.50 EUR", for error messages (amounts here are never negative). */
function formatMinor(minor: bigint, currency: string): string {
  const digits = minorDigits(currency);
  const scale = 10n ** BigInt(digits);
  const fraction = (minor % scale).toString().padStart(digits, "0");
  return `${minor / scale}${digits === 0 ? "" : `.${fraction}`} ${currency}`;
}

function notFound(id: string): ConnectError {
  return new ConnectError(`payment ${id} not found`, Code.NotFound);
}
