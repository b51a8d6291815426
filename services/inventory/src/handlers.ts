import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { deadlineKey, requireRole } from "@meshmart/kit";
import type { InventoryService } from "@meshmart/kit/gen/meshmart/inventory/v1/inventory_service_pb.js";
import { errorWithInfo } from "./error-info.js";
import { toReservation, toStockLevel } from "./stock-mapper.js";
import { DeadlinePassedError, type InventoryStore } from "./store.js";

/** What the inventory handlers need. */
export interface InventoryDeps {
  store: InventoryStore;
}

const ADMIN = "admin";

/**
 * The InventoryService. Only SetStock checks a token (role admin). The reservation RPCs
 * and GetStock are authorized by the mesh, not by a user token: the AuthorizationPolicy
 * admits only the orders service account (mTLS identity) to them. Orders forwards the
 * customer's token when it has one, but a saga resumed after a crash, or compensating long
 * after the customer's token expired, has none, and a release or commit must still go
 * through. A token that is sent is still verified by the auth interceptor (a bad one is
 * UNAUTHENTICATED), so nothing here trusts an unverified identity.
 */
export function createInventoryHandlers({
  store,
}: InventoryDeps): ServiceImpl<typeof InventoryService> {
  return {
    async getStock(req) {
      const row =
        req.key.case === "productId"
          ? await store.getStock(req.key.value)
          : req.key.case === "sku"
            ? await store.getStockBySku(req.key.value)
            : undefined;
      if (row === undefined) {
        const what = req.key.case === "sku" ? `sku ${req.key.value}` : `product ${req.key.value}`;
        throw new ConnectError(`no stock record for ${what}`, Code.NotFound);
      }
      return { stock: toStockLevel(row) };
    },

    async setStock(req, ctx) {
      requireRole(ctx, ADMIN);
      const outcome = await store.setStock({
        productId: req.productId,
        sku: req.sku,
        onHand: req.onHand,
      });
      switch (outcome.kind) {
        case "set":
          return { stock: toStockLevel(outcome.stock) };
        case "below_reserved":
          throw new ConnectError(
            `on_hand ${req.onHand} is below the ${outcome.stock.reserved} units reserved for product ${outcome.stock.product_id}`,
            Code.FailedPrecondition,
          );
        case "sku_conflict":
          throw new ConnectError(
            `another SetStock claimed sku ${req.sku} at the same time; retry`,
            Code.Aborted,
          );
      }
    },

    async reserveStock(req, ctx) {
      const outcome = await withinDeadline(() =>
        store.reserve(
          req.orderId,
          req.items.map((i) => ({ product_id: i.productId, quantity: i.quantity })),
          ctx.values.get(deadlineKey),
        ),
      );
      switch (outcome.kind) {
        case "reserved":
        case "existing":
          return { reservation: toReservation(outcome.reservation) };
        case "released":
          throw errorWithInfo(
            `the reservation of order ${outcome.reservation.order_id} was released`,
            Code.FailedPrecondition,
            "RESERVATION_RELEASED",
            { order_id: outcome.reservation.order_id },
          );
        case "mismatch":
          throw errorWithInfo(
            `order ${outcome.reservation.order_id} already has a reservation with different items`,
            Code.FailedPrecondition,
            "RESERVATION_MISMATCH",
            { order_id: outcome.reservation.order_id },
          );
        case "unknown_product":
          throw errorWithInfo(
            `product ${outcome.productId} has no stock record`,
            Code.NotFound,
            "UNKNOWN_PRODUCT",
            { product_id: outcome.productId },
          );
        case "insufficient":
          throw errorWithInfo(
            `product ${outcome.productId} has ${outcome.available} units available, ${outcome.requested} requested`,
            Code.FailedPrecondition,
            "INSUFFICIENT_STOCK",
            {
              product_id: outcome.productId,
              requested: String(outcome.requested),
              available: String(outcome.available),
            },
          );
      }
    },

    async releaseReservation(req, ctx) {
      const outcome = await withinDeadline(() =>
        store.release(req.orderId, ctx.values.get(deadlineKey)),
      );
      if (outcome.kind === "committed") {
        throw new ConnectError(
          `the reservation of order ${outcome.reservation.order_id} was committed and cannot be released`,
          Code.FailedPrecondition,
        );
      }
      return { reservation: toReservation(outcome.reservation) };
    },

    async commitReservation(req, ctx) {
      const outcome = await withinDeadline(() =>
        store.commit(req.orderId, ctx.values.get(deadlineKey)),
      );
      switch (outcome.kind) {
        case "committed":
          return { reservation: toReservation(outcome.reservation) };
        case "released":
          throw new ConnectError(
            `the reservation of order ${outcome.reservation.order_id} was released and cannot be committed`,
            Code.FailedPrecondition,
          );
        case "not_found":
          throw notFoundReservation(req.orderId);
      }
    },

    async getReservation(req) {
      const row = await store.getReservation(req.orderId);
      if (row === undefined) throw notFoundReservation(req.orderId);
      return { reservation: toReservation(row) };
    },
  };
}

/**
 * Runs a reservation change bounded by the caller's deadline; when it passes first, the
 * change was not made and the caller (who retries with the same order id) is told so.
 */
async function withinDeadline<T>(change: () => Promise<T>): Promise<T> {
  try {
    return await change();
  } catch (reason) {
    if (reason instanceof DeadlinePassedError) {
      throw new ConnectError(reason.message, Code.DeadlineExceeded);
    }
    throw reason;
  }
}

function notFoundReservation(orderId: string): ConnectError {
  return new ConnectError(`order ${orderId} has no reservation`, Code.NotFound);
}
