import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  CardBrand,
  DeclineCode,
  type Payment,
  PaymentSchema,
  PaymentStatus,
  type Refund,
  RefundSchema,
} from "@meshmart/kit/gen/meshmart/payments/v1/payments_pb.js";
import type { CardBrandName } from "./card.js";
import { fromMinorUnits } from "./money.js";
import type { DeclineReason } from "./payment-provider.js";
import type { PaymentRecord, PaymentStatusName, RefundRow } from "./store.js";

const statuses: Record<PaymentStatusName, PaymentStatus> = {
  authorized: PaymentStatus.AUTHORIZED,
  captured: PaymentStatus.CAPTURED,
  voided: PaymentStatus.VOIDED,
  partially_refunded: PaymentStatus.PARTIALLY_REFUNDED,
  refunded: PaymentStatus.REFUNDED,
  failed: PaymentStatus.FAILED,
};

const brands: Record<CardBrandName, CardBrand> = {
  visa: CardBrand.VISA,
  mastercard: CardBrand.MASTERCARD,
  amex: CardBrand.AMEX,
  other: CardBrand.OTHER,
};

const declines: Record<DeclineReason, DeclineCode> = {
  card_declined: DeclineCode.CARD_DECLINED,
  insufficient_funds: DeclineCode.INSUFFICIENT_FUNDS,
  expired_card: DeclineCode.EXPIRED_CARD,
  incorrect_cvc: DeclineCode.INCORRECT_CVC,
  processing_error: DeclineCode.PROCESSING_ERROR,
};

/** A stored payment (with its refunds) as the API's Payment. */
export function toPayment({ payment: p, refunds }: PaymentRecord): Payment {
  return create(PaymentSchema, {
    id: p.id,
    orderId: p.order_id,
    status: statuses[p.status],
    amount: fromMinorUnits(p.amount_minor, p.currency),
    capturedAmount: fromMinorUnits(p.captured_minor, p.currency),
    refundedAmount: fromMinorUnits(p.refunded_minor, p.currency),
    cardLast4: p.card_last4,
    cardBrand: brands[p.card_brand],
    declineCode: p.decline_code === null ? DeclineCode.UNSPECIFIED : declines[p.decline_code],
    failureReason: p.failure_reason,
    refunds: refunds.map(toRefund),
    createTime: timestampFromDate(p.created_at),
    updateTime: timestampFromDate(p.updated_at),
  });
}

/** A stored refund as the API's Refund. */
export function toRefund(r: RefundRow): Refund {
  return create(RefundSchema, {
    id: r.id,
    amount: fromMinorUnits(r.amount_minor, r.currency),
    reason: r.reason,
    createTime: timestampFromDate(r.created_at),
  });
}
