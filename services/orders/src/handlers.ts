import { randomUUID } from "node:crypto";
import {
  type Client,
  Code,
  ConnectError,
  type HandlerContext,
  type ServiceImpl,
} from "@connectrpc/connect";
import {
  annotateCallSpan,
  type Caller,
  type Logger,
  type PageTokens,
  remainingMs,
  requireCaller,
  traceContextOf,
} from "@meshmart/kit";
import type { Product } from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_pb.js";
import type { CatalogService } from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_service_pb.js";
import type { OrderService } from "@meshmart/kit/gen/meshmart/orders/v1/orders_service_pb.js";
import type { CardVault } from "./card-vault.js";
import type { OrderChanges } from "./order-changes.js";
import { decodePageToken, encodePageToken, isTerminal, toOrder } from "./order-mapper.js";
import { itemsHash, type PricedOrder, priceOrder } from "./pricing.js";
import { createProductLookup } from "./product-lookup.js";
import { planCancel } from "./saga.js";
import type { SagaWorker } from "./saga-worker.js";
import type { SoldOutHints } from "./sold-out-hints.js";
import type { OrderRecord, OrdersStore } from "./store.js";

/** What the order handlers need. */
export interface OrdersDeps {
  store: OrdersStore;
  catalog: Client<typeof CatalogService>;
  vault: CardVault;
  /** The saga worker: runs a new order's first step, and is woken when an order needs it. */
  saga: Pick<SagaWorker, "wake" | "adopt" | "finishedAtPlacement">;
  /** What inventory said lately about sold-out products (shared with the saga). */
  soldOut: SoldOutHints;
  changes: OrderChanges;
  logger: Logger;
  /** How often a waiting RPC re-reads an order another replica may be moving. */
  pollMs: number;
  /** How long a claimed saga step belongs to its runner (SAGA_LEASE_MS). */
  leaseMs: number;
  /** Longest CancelOrder waits for the compensation. */
  cancelWaitMs: number;
  /** How often WatchOrder re-reads an order when no event woke it. */
  watchFallbackMs: number;
  /** Aborted when the service begins to shut down: open watches end then. */
  shuttingDown: AbortSignal;
  /** ListOrders' page tokens (the kit's createPageTokens for its page_token field). */
  pageTokens: PageTokens;
}

const DEFAULT_PAGE_SIZE = 20;
/** A shared GetProduct's own deadline: the route's timeout (deploy/callgraph.yaml). */
const PRODUCT_LOOKUP_TIMEOUT_MS = 5_000;
const ADMIN = "admin";

/** How long before the caller's deadline PlaceOrder stops waiting for the first step. */
const ANSWER_MARGIN_MS = 100;

/**
 * The first step's outcome, or undefined (the order as created, PENDING) once the caller's
 * deadline is ANSWER_MARGIN_MS away: with inventory slow, a PENDING order in time is worth
 * more to the caller than DEADLINE_EXCEEDED for an order that exists. The step goes on.
 */
async function beforeDeadline<T>(step: Promise<T>, leftMs: number): Promise<T | undefined> {
  if (!Number.isFinite(leftMs)) return step;
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), Math.max(0, leftMs - ANSWER_MARGIN_MS));
  });
  try {
    return await Promise.race([step, late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The OrderService. Every RPC needs a caller; customers see only their own orders (someone
 * else's is NOT_FOUND), admins see every order.
 */
export function createOrdersHandlers(deps: OrdersDeps): ServiceImpl<typeof OrderService> {
  const { store, catalog, vault, saga, changes, logger } = deps;

  /** Whose orders the caller may see: undefined means all (admin). */
  const ownerScope = (caller: Caller): string | undefined =>
    caller.roles.includes(ADMIN) ? undefined : caller.userId;

  const lookUp = createProductLookup(catalog, PRODUCT_LOOKUP_TIMEOUT_MS);

  async function priceFromCatalog(productId: string, ctx: HandlerContext): Promise<Product> {
    try {
      return await lookUp(productId, ctx);
    } catch (reason) {
      const err = ConnectError.from(reason);
      if (err.code === Code.NotFound) {
        throw new ConnectError(`product ${productId} not found`, Code.NotFound);
      }
      if (err.code === Code.DeadlineExceeded || err.code === Code.Canceled) throw err;
      logger.warn({ productId, code: Code[err.code] }, "catalog could not price an item");
      throw new ConnectError("catalog is unavailable; retry the order", Code.Unavailable);
    }
  }

  /** Reads the order until it is terminal, for at most `ms`; undefined when it is not by then. */
  async function awaitTerminal(
    orderId: string,
    ms: number,
    ctx: HandlerContext,
  ): Promise<OrderRecord | undefined> {
    const until = Date.now() + ms;
    for (;;) {
      // Listening before the read: a change recorded while it runs ends the wait at once.
      const change = changes.listen(orderId);
      try {
        const record = await store.get(orderId);
        if (record === undefined) throw notFound(orderId);
        if (isTerminal(record.order.status)) return record;
        const left = until - Date.now();
        if (left <= 0 || ctx.signal.aborted) return undefined;
        const terminal = await change.wait(Math.min(left, deps.pollMs), ctx.signal);
        if (terminal !== undefined) return terminal;
      } finally {
        change.close();
      }
    }
  }

  return {
    async placeOrder(req, ctx) {
      const caller = requireCaller(ctx);
      const card = req.payment?.card;
      if (card === undefined)
        throw new ConnectError("payment.card is required", Code.InvalidArgument);
      const requested = req.items.map((i) => ({ productId: i.productId, quantity: i.quantity }));
      const hash = itemsHash(requested);
      const replay = (record: OrderRecord) => {
        if (record.order.request_hash !== hash) {
          throw new ConnectError(
            "request_id was already used for a different order; use a new request_id",
            Code.FailedPrecondition,
          );
        }
        return { order: toOrder(record) };
      };
      // Retries are rare, so the request id is not looked up first (a round trip on every
      // order): the insert detects it. Only when pricing fails is it looked up, so a retry
      // of an order whose product has since gone still answers that order.
      let priced: PricedOrder;
      try {
        const products = await Promise.all(
          requested.map((item) => priceFromCatalog(item.productId, ctx)),
        );
        priced = priceOrder(requested, products);
      } catch (reason) {
        const earlier = await store.findByRequest(caller.userId, req.requestId);
        if (earlier !== undefined) return replay(earlier);
        throw reason;
      }
      const id = randomUUID();
      // The order id on the span finds the trace in Jaeger (tag meshmart.order.id=<id>).
      annotateCallSpan(ctx, { "meshmart.order.id": id });
      // A product inventory has just refused orders for: this order is cancelled as it is
      // placed, without a saga to run (see SoldOutHints for the probe that keeps asking;
      // an order placed before the refusal arrived is screened again by its first step).
      const short = deps.soldOut.shortage(priced.lines, id);
      const outcome = await store.create({
        id,
        userId: caller.userId,
        requestId: req.requestId,
        requestHash: hash,
        priced,
        cardLast4: card.number.slice(-4),
        cardSealed: short === undefined ? vault.seal(card, id) : Buffer.alloc(0),
        traceContext: traceContextOf(ctx),
        leaseMs: deps.leaseMs,
        ...(short === undefined
          ? {}
          : {
              refusal: {
                code: "OUT_OF_STOCK" as const,
                reason: `out of stock: ${priced.lines.find((l) => l.productId === short.productId)?.sku ?? short.productId}`,
              },
            }),
      });
      switch (outcome.kind) {
        case "conflict":
          throw new ConnectError(
            "request_id was already used for a different order; use a new request_id",
            Code.FailedPrecondition,
          );
        case "replayed":
          return replay(outcome.record);
        case "refused":
          saga.finishedAtPlacement(outcome.record);
          return { order: toOrder(outcome.record) };
        case "created": {
          // The order's first step, the stock reservation, runs now rather than when the
          // saga worker next looks (it cannot be claimed by anyone else before its lease
          // ends): an order that cannot get its stock is answered CANCELLED
          // (OUT_OF_STOCK) by this call, and in a flash sale the orders that will not get
          // any do not wait in the worker's queue behind those that will.
          const terminal = await beforeDeadline(saga.adopt(outcome.claim), remainingMs(ctx));
          return { order: toOrder(terminal ?? outcome.record) };
        }
      }
    },

    async getOrder(req, ctx) {
      const caller = requireCaller(ctx);
      const record = await store.get(req.orderId, ownerScope(caller));
      if (record === undefined) throw notFound(req.orderId);
      return { order: toOrder(record) };
    },

    async listOrders(req, ctx) {
      const caller = requireCaller(ctx);
      const owner = ownerScope(caller);
      const scope = owner ?? "*";
      const pageSize = req.pageSize === 0 ? DEFAULT_PAGE_SIZE : req.pageSize;
      const beforeSeq =
        req.pageToken === "" ? undefined : decodePageToken(deps.pageTokens, req.pageToken, scope);
      // One extra row tells whether another page exists without a count query.
      const records = await store.list({
        ...(owner === undefined ? {} : { userId: owner }),
        ...(beforeSeq === undefined ? {} : { beforeSeq }),
        limit: pageSize + 1,
      });
      const page = records.slice(0, pageSize);
      const last = page.at(-1);
      return {
        orders: page.map(toOrder),
        nextPageToken:
          records.length > pageSize && last !== undefined
            ? encodePageToken(deps.pageTokens, last.order.seq, scope)
            : "",
      };
    },

    async cancelOrder(req, ctx) {
      const caller = requireCaller(ctx);
      const owner = ownerScope(caller);
      const existing = await store.get(req.orderId, owner);
      if (existing === undefined) throw notFound(req.orderId);
      const who = existing.order.user_id === caller.userId ? "the customer" : "an administrator";
      const words = req.reason.trim();
      const reason = words === "" ? `cancelled by ${who}` : `cancelled by ${who}: ${words}`;
      const outcome = await store.requestCancel(req.orderId, owner, reason, planCancel);
      let record: OrderRecord | undefined;
      switch (outcome.kind) {
        case "not_found":
          throw notFound(req.orderId);
        case "terminal":
          record = outcome.record;
          break;
        case "planned":
          if (outcome.plan === "too_late") throw tooLate(req.orderId);
          saga.wake();
          // Leave a little of the caller's deadline to answer in.
          record = await awaitTerminal(
            req.orderId,
            Math.min(deps.cancelWaitMs, remainingMs(ctx) - 250),
            ctx,
          );
          if (record === undefined) {
            throw new ConnectError(
              "the cancellation was accepted and is still in progress; retry CancelOrder or follow the order with GetOrder",
              Code.Unavailable,
            );
          }
      }
      if (record.order.status === "CONFIRMED") {
        throw new ConnectError(
          `order ${req.orderId} is already confirmed and can no longer be cancelled`,
          Code.FailedPrecondition,
        );
      }
      return { order: toOrder(record) };
    },

    async *watchOrder(req, ctx) {
      const caller = requireCaller(ctx);
      const ended = AbortSignal.any([ctx.signal, deps.shuttingDown]);
      // Every read happens while listening for the order's next change, and the wait after
      // it uses that same listen: a change notified during the read (or while a client is
      // slow to take what was yielded) ends the wait at once instead of being dropped.
      let change = changes.listen(req.orderId);
      try {
        let record = await store.get(req.orderId, ownerScope(caller));
        if (record === undefined) throw notFound(req.orderId);
        yield { order: toOrder(record) };
        let seen = stamp(record);
        while (!isTerminal(record.order.status)) {
          const terminal = await change.wait(deps.watchFallbackMs, ended);
          // The client went away, its deadline passed, or the server is shutting down: the
          // stream simply ends; a client that still cares watches again.
          if (ended.aborted) return;
          change = changes.listen(req.orderId);
          // The terminal commit as the saga worker of this replica wrote it needs no read
          // (in a flash sale that is most watchers' only change); anything else is read.
          const next = terminal ?? (await store.get(req.orderId));
          if (next === undefined) throw notFound(req.orderId);
          record = next;
          const now = stamp(record);
          if (now !== seen) {
            seen = now;
            yield { order: toOrder(record) };
          }
        }
      } finally {
        change.close();
      }
    },
  };
}

/** What a client can see change in an order. */
function stamp({ order }: OrderRecord): string {
  return `${order.status}|${order.payment_id ?? ""}|${order.updated_at.getTime()}`;
}

function notFound(orderId: string): ConnectError {
  return new ConnectError(`order ${orderId} not found`, Code.NotFound);
}

function tooLate(orderId: string): ConnectError {
  return new ConnectError(
    `order ${orderId} is being confirmed (its stock is committed) and can no longer be cancelled`,
    Code.FailedPrecondition,
  );
}
