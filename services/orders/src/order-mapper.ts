import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { PageTokens } from "@meshmart/kit";
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
 * Page tokens are opaque to clients and signed (the kit's PageTokens): the seq of the
 * page's last order, good only in the listing it came from (whose orders: a user id, or
 * "*" for an admin's listing of all). A token from another caller's listing, or one a
 * client wrote itself, is INVALID_ARGUMENT naming page_token.
 */
export function encodePageToken(tokens: PageTokens, lastSeq: bigint, scope: string): string {
  return tokens.issue({ s: lastSeq.toString() }, scope);
}

/** Reads a page token; INVALID_ARGUMENT naming page_token when it is not one for this listing. */
export function decodePageToken(tokens: PageTokens, token: string, scope: string): bigint {
  const { s } = tokens.open(token, scope, ["s"]);
  // Signed by us, so always digits; the check keeps a future format change from reaching SQL.
  if (!/^\d{1,19}$/.test(s)) {
    throw new ConnectError("page_token is not a token this service issued", Code.InvalidArgument);
  }
  return BigInt(s);
}
