/**
 * The backend, as generated Connect clients over one transport to the page's own origin:
 * the edge serves the site and proxies these calls to the services. Binary protobuf on the
 * wire; server streams (WatchOrder) arrive as a fetch body read chunk by chunk.
 */
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { CatalogService } from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_service_pb.js";
import { IdentityService } from "@meshmart/kit/gen/meshmart/identity/v1/identity_service_pb.js";
import { NotificationService } from "@meshmart/kit/gen/meshmart/notifications/v1/notifications_service_pb.js";
import { OrderService } from "@meshmart/kit/gen/meshmart/orders/v1/orders_service_pb.js";
import { getSession, type Session, setSession } from "./session.js";

/** Identity's calls that carry no access token: they are how a session is obtained. */
const TOKENLESS = new Set(["SignUp", "Login", "RefreshToken"]);
/** Refresh this long before the access token expires, so no call races its expiry. */
const REFRESH_MARGIN_MS = 30_000;

let refreshing: Promise<Session | undefined> | undefined;

/**
 * A session whose access token is good for a while yet: the current one, or one refreshed
 * now. Refresh tokens are single-use (a second use revokes the session), so one refresh
 * runs at a time, across tabs too (Web Locks), and a tab that waited reuses the result.
 */
async function freshSession(force = false): Promise<Session | undefined> {
  const current = getSession();
  if (current === undefined) return undefined;
  if (!force && current.accessExpiresAt - Date.now() > REFRESH_MARGIN_MS) return current;
  refreshing ??= (async () => {
    try {
      const run = () => refresh(current.refreshToken);
      // Web Locks need a secure context (https or localhost); elsewhere, one tab's lock.
      return navigator.locks === undefined
        ? await run()
        : await navigator.locks.request("meshmart-token-refresh", run);
    } finally {
      refreshing = undefined;
    }
  })();
  return refreshing;
}

async function refresh(used: string): Promise<Session | undefined> {
  const latest = getSession();
  if (latest === undefined) return undefined;
  // Another tab refreshed while this one waited for the lock.
  if (latest.refreshToken !== used && latest.accessExpiresAt - Date.now() > REFRESH_MARGIN_MS) {
    return latest;
  }
  try {
    const res = await identity.refreshToken({ refreshToken: latest.refreshToken });
    const next: Session = {
      ...latest,
      accessToken: res.accessToken,
      refreshToken: res.refreshToken,
      accessExpiresAt: expiry(res.accessTokenExpireTime, res.expiresIn),
    };
    setSession(next);
    return next;
  } catch (reason) {
    if (ConnectError.from(reason).code === Code.Unauthenticated) setSession(undefined);
    throw reason;
  }
}

/** When an access token expires: its expire time, else now + expires_in. */
export function expiry(
  expireTime: Parameters<typeof timestampDate>[0] | undefined,
  expiresIn: bigint,
): number {
  return expireTime === undefined
    ? Date.now() + Number(expiresIn) * 1000
    : timestampDate(expireTime).getTime();
}

/**
 * Adds the access token to every call but the token-less ones. A unary call that still
 * meets UNAUTHENTICATED (the token was revoked or the clock is off) refreshes once and is
 * retried; when that fails too, the session is forgotten and the error stands.
 */
const auth: Interceptor = (next) => async (req) => {
  if (req.service.typeName === IdentityService.typeName && TOKENLESS.has(req.method.name)) {
    return next(req);
  }
  const session = await freshSession();
  if (session !== undefined) req.header.set("authorization", `Bearer ${session.accessToken}`);
  try {
    return await next(req);
  } catch (reason) {
    const err = ConnectError.from(reason);
    if (err.code !== Code.Unauthenticated || session === undefined || req.stream) throw reason;
    const renewed = await freshSession(true).catch(() => undefined);
    if (renewed === undefined) {
      setSession(undefined);
      throw reason;
    }
    req.header.set("authorization", `Bearer ${renewed.accessToken}`);
    return next(req);
  }
};

const transport = createConnectTransport({
  baseUrl: window.location.origin,
  useBinaryFormat: true,
  interceptors: [auth],
});

export const catalog = createClient(CatalogService, transport);
export const identity = createClient(IdentityService, transport);
export const orders = createClient(OrderService, transport);
export const notifications = createClient(NotificationService, transport);
