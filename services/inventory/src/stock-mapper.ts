import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  type Reservation,
  type ReservationItem,
  ReservationItemSchema,
  ReservationSchema,
  ReservationStatus,
  type StockLevel,
  StockLevelSchema,
} from "@meshmart/kit/gen/meshmart/inventory/v1/inventory_pb.js";
import type { ReservationRow, ReservationStatusText, StockRow } from "./store.js";

const statuses: Record<ReservationStatusText, ReservationStatus> = {
  reserved: ReservationStatus.RESERVED,
  committed: ReservationStatus.COMMITTED,
  released: ReservationStatus.RELEASED,
};

/** A stored stock row as the API's StockLevel. */
export function toStockLevel(row: StockRow): StockLevel {
  return create(StockLevelSchema, {
    productId: row.product_id,
    sku: row.sku,
    onHand: row.on_hand,
    reserved: row.reserved,
    available: row.on_hand - row.reserved,
    updateTime: timestampFromDate(row.updated_at),
  });
}

/** Reservation items as the API's ReservationItems, in product id order. */
export function toReservationItems(items: ReservationRow["items"]): ReservationItem[] {
  return items.map((i) =>
    create(ReservationItemSchema, { productId: i.product_id, quantity: i.quantity }),
  );
}

/** A stored reservation as the API's Reservation. */
export function toReservation(row: ReservationRow): Reservation {
  return create(ReservationSchema, {
    orderId: row.order_id,
    status: statuses[row.status],
    items: toReservationItems(row.items),
    createTime: timestampFromDate(row.created_at),
    updateTime: timestampFromDate(row.updated_at),
  });
}
