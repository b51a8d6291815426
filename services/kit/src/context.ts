import { createContextKey, type HandlerContext } from "@connectrpc/connect";
import type { Span } from "@opentelemetry/api";

/** The authenticated caller, as verified from the access token the request carried. */
export interface Caller {
  /** Subject: the user's id. */
  readonly userId: string;
  readonly email: string;
  readonly roles: readonly string[];
  /** The verified bearer token, forwarded as-is to downstream services. */
  readonly token: string;
}

/** Request id from `x-request-id`, or one the kit generated; logged and forwarded downstream. */
export const requestIdKey = createContextKey<string>("", { description: "request id" });

/**
 * Absolute deadline (epoch ms) of the current RPC: the caller's, capped by the server's
 * maximum. Outgoing calls take their timeout from it so the deadline propagates.
 */
export const deadlineKey = createContextKey<number>(Number.POSITIVE_INFINITY, {
  description: "deadline",
});

/** Set by a transport that enforces `deadlineKey` itself (the gRPC adapter), so the deadline interceptor need not. */
export const deadlineEnforcedKey = createContextKey<boolean>(false, {
  description: "deadline enforced",
});

/** The verified caller, or undefined for an anonymous request. */
export const callerKey = createContextKey<Caller | undefined>(undefined, {
  description: "caller",
});

/** Milliseconds left before the current RPC's deadline (never negative). */
export function remainingMs(ctx: Pick<HandlerContext, "values">): number {
  return Math.max(0, ctx.values.get(deadlineKey) - Date.now());
}

/**
 * The current RPC's server span (non-recording when nothing is exported, but still
 * carrying the caller's trace id). Kept in ctx.values so logs and outgoing calls find the
 * trace without AsyncLocalStorage.
 */
export const spanKey = createContextKey<Span | undefined>(undefined, {
  description: "server span",
});
