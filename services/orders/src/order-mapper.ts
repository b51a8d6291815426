import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  CancelCode,
  type Order,
  OrderSchema,
  OrderStatus,
} from "@meshmart/kit/gen/meshmart/orders/v1/orders_pb.js";
import type { CancelCodeText, OrderRecord, OrderStatusText } from "./store.js";

const statuses: Record<OrderStatusText, OrderStatus> = {
  PENDING: OrderStatus.PENDING,
  CONFIRMED: OrderStatus.CONFIRMED,
  CANCELLED: OrderStatus.CANCELLED,
};

const cancelCodes: Record<CancelCodeText, CancelCode> = {
  "": CancelCode.UNSPECIFIED,
  CUSTOMER_REQUESTED: CancelCode.CUSTOMER_REQUESTED,
  OUT_OF_STOCK: CancelCode.OUT_OF_STOCK,
  PAYMENT_DECLINED: CancelCode.PAYMENT_DECLINED,
  PRODUCT_UNAVAILABLE: CancelCode.PRODUCT_UNAVAILABLE,
  INTERNAL_ERROR: CancelCode.INTERNAL_ERROR,
};

/** A stored order with its lines as the API's Order. */
export function toOrder({ order, items }: OrderRecord): Order {
  const money = (units: bigint, nanos: number) => ({
    currencyCode: order.currency,
    units,
    nanos,
  });
  return create(OrderSchema, {
    id: order.id,
    userId: order.user_id,
    status: statuses[order.status],
    items: items.map((i) => ({
      productId: i.product_id,
      sku: i.sku,
      name: i.name,
      quantity: i.quantity,
      unitPrice: money(i.unit_units, i.unit_nanos),
      lineTotal: money(i.line_units, i.line_nanos),
    })),
    total: money(order.total_units, order.total_nanos),
    cancelCode: cancelCodes[order.cancel_code],
    cancelReason: order.cancel_reason,
    paymentId: order.payment_id ?? "",
    cardLast4: order.card_last4,
    createTime: timestampFromDate(order.created_at),
    updateTime: timestampFromDate(order.updated_at),
  });
}

/** Whether the order reached CONFIRMED or CANCELLED. */
export function isTerminal(status: OrderStatusText): boolean {
  return status !== "PENDING";
}

/**
 * Page tokens are opaque to clients (base64url JSON): the seq of the page's last order and
 * whose orders the listing covers ("*" for an admin's listing of all). A token from
 * another caller's listing is refused rather than paging through a different list.
 */
export function encodePageToken(lastSeq: bigint, scope: string): string {
  return Buffer.from(JSON.stringify({ s: lastSeq.toString(), o: scope })).toString("base64url");
}

/** Reads a page token; INVALID_ARGUMENT when it is malformed or belongs to another listing. */
export function decodePageToken(token: string, scope: string): bigint {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw notOurs();
  }
  const t = parsed as Record<string, unknown>;
  if (typeof t !== "object" || t === null || typeof t.s !== "string" || !/^\d{1,19}$/.test(t.s)) {
    throw notOurs();
  }
  if (t.o !== scope) {
    throw new ConnectError("page_token was issued for a different listing", Code.InvalidArgument);
  }
  return BigInt(t.s);
}

function notOurs(): ConnectError {
  return new ConnectError("page_token is not a token this service issued", Code.InvalidArgument);
}
