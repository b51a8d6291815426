import type { Code, ConnectError } from "@connectrpc/connect";
import { errorWithInfo as kitErrorWithInfo } from "@meshmart/kit";

/** The ErrorInfo domain of inventory's reasons. */
export const ERROR_DOMAIN = "inventory.meshmart";

/** The ErrorInfo reasons InventoryService documents. */
export type InventoryReason =
  | "INSUFFICIENT_STOCK"
  | "UNKNOWN_PRODUCT"
  | "RESERVATION_MISMATCH"
  | "RESERVATION_RELEASED";

/** A ConnectError carrying an inventory ErrorInfo with `reason` and `metadata`. */
export function errorWithInfo(
  message: string,
  code: Code,
  reason: InventoryReason,
  metadata: Record<string, string>,
): ConnectError {
  return kitErrorWithInfo(message, code, { reason, domain: ERROR_DOMAIN, metadata });
}
