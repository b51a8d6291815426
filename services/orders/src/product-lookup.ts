import type { Client, HandlerContext } from "@connectrpc/connect";
import { ConnectError } from "@connectrpc/connect";
import { outgoing } from "@meshmart/kit";
import type { Product } from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_pb.js";
import type { CatalogService } from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_service_pb.js";

/** Looks a product up in catalog for a PlaceOrder call. */
export type ProductLookup = (productId: string, ctx: HandlerContext) => Promise<Product>;

/**
 * GetProduct with concurrent lookups of one product sharing one call: in a flash sale a
 * thousand PlaceOrders want the same product within a second, and each would otherwise
 * cost orders a call of its own while it is the busiest process. A lookup that joins a
 * call in flight gets the answer that call gets, as if it had started a moment earlier;
 * nothing is kept once the call ends, so no price is ever older than the call.
 *
 * GetProduct answers the same whoever asks, so the shared call carries the first caller's
 * request id and trace but no caller's token, and its own deadline (`timeoutMs`, the
 * route's): one caller hanging up or running out of time does not fail the others, each
 * of which still stops waiting at its own deadline or hang-up.
 */
export function createProductLookup(
  catalog: Client<typeof CatalogService>,
  timeoutMs: number,
): ProductLookup {
  const inFlight = new Map<string, Promise<Product | undefined>>();
  return (productId, ctx) => {
    let shared = inFlight.get(productId);
    if (shared === undefined) {
      const forwarded = new Headers(outgoing(ctx).headers);
      forwarded.delete("authorization");
      shared = catalog
        .getProduct({ productId }, { headers: forwarded, timeoutMs })
        .then((res) => res.product)
        .finally(() => inFlight.delete(productId));
      inFlight.set(productId, shared);
    }
    return untilAborted(shared, ctx.signal).then((product) => {
      if (product === undefined) throw new Error("GetProduct answered without a product");
      return product;
    });
  };
}

/** `work`, or the reason `signal` aborted with, whichever comes first. */
function untilAborted<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(ConnectError.from(signal.reason));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(ConnectError.from(signal.reason));
    signal.addEventListener("abort", onAbort, { once: true });
    work.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (reason: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(reason);
      },
    );
  });
}
