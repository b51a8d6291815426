import { Code, ConnectError, type HandlerContext, type Interceptor } from "@connectrpc/connect";
import { createRemoteJWKSet, type JWTVerifyGetKey, jwtVerify } from "jose";
import { type Caller, callerKey } from "../context.js";

/** Verifies a bearer token and returns who it names; throws when the token is not acceptable. */
export type TokenVerifier = (token: string) => Promise<Caller>;

/** Options for {@link createJwtVerifier}. */
export interface JwtVerifierOptions {
  /** Key source: identity's JWKS URL, or a key getter (tests use a local JWKS). */
  keys: URL | JWTVerifyGetKey;
  issuer: string;
  audience: string;
  /**
   * Most verified tokens remembered (least recently used go first); 0 turns the cache off.
   * An entry is a token (~600 bytes) and its claims, so the default costs a few MB.
   */
  cacheSize?: number;
  /** Clock for the cache's expiry check, in epoch ms; tests move it. */
  now?: () => number;
}

/** Default bound of the verified-token cache: a busy replica's distinct live callers fit. */
export const DEFAULT_TOKEN_CACHE_SIZE = 10_000;

interface CachedToken {
  caller: Caller;
  /** The token's `exp`, in epoch ms: the entry is void from then on. */
  expiresAt: number;
  header: Parameters<JWTVerifyGetKey>[0];
  /** The key the signature was checked with; a hit must resolve to this very key. */
  key: unknown;
}

/**
 * Verifies ES256 access tokens issued by identity against its JWKS (fetched once,
 * cached, refetched when a token names an unknown key id). The edge verified the same
 * token already; checking again here is the mesh's defence in depth.
 *
 * Successful verifications are remembered per exact token string, because the ECDSA
 * check dominated a busy service's auth cost while a client repeats its token on every
 * call. A remembered token is accepted only before its `exp`, and only while the key
 * set still resolves its header to the same key object it was verified with: after a
 * JWKS refresh that dropped or replaced the key, the hit falls through to a full
 * verification, which then fails. A tampered token is a different string, so it can
 * never hit. Failures are not remembered: a bad token is either an attack (each one
 * different, so caching gains nothing and would let junk evict good entries) or a
 * token naming a key not fetched yet, which must be retried against the refreshed set.
 */
export function createJwtVerifier(options: JwtVerifierOptions): TokenVerifier {
  const keys = options.keys instanceof URL ? createRemoteJWKSet(options.keys) : options.keys;
  const cacheSize = options.cacheSize ?? DEFAULT_TOKEN_CACHE_SIZE;
  const now = options.now ?? Date.now;
  // A Map iterates in insertion order; re-inserting on a hit makes its head the least
  // recently used entry.
  const cache = new Map<string, CachedToken>();

  const verifyFully = async (token: string): Promise<CachedToken> => {
    let key: unknown;
    let cachedHeader: Parameters<JWTVerifyGetKey>[0] | undefined;
    const { payload } = await jwtVerify(
      token,
      async (header, input) => {
        cachedHeader = header;
        key = await keys(header, input);
        return key as Awaited<ReturnType<JWTVerifyGetKey>>;
      },
      {
        issuer: options.issuer,
        audience: options.audience,
        algorithms: ["ES256"],
        requiredClaims: ["sub", "exp"],
        currentDate: new Date(now()),
      },
    );
    const roles = Array.isArray(payload.roles)
      ? payload.roles.filter((r): r is string => typeof r === "string")
      : [];
    return {
      caller: Object.freeze({
        userId: String(payload.sub),
        email: typeof payload.email === "string" ? payload.email : "",
        roles: Object.freeze(roles),
        token,
      }),
      expiresAt: (payload.exp as number) * 1000,
      // Set, since jwtVerify resolved only after asking for the key.
      header: cachedHeader as Parameters<JWTVerifyGetKey>[0],
      key,
    };
  };

  /** The remembered caller if the entry is still good, else undefined (and the entry gone). */
  const lookUp = async (token: string): Promise<Caller | undefined> => {
    const entry = cache.get(token);
    if (entry === undefined) return undefined;
    // jwtVerify rejects at exp exactly (no clock tolerance); the cache does the same.
    if (now() >= entry.expiresAt) {
      cache.delete(token);
      return undefined;
    }
    let current: unknown;
    try {
      // For a remote JWKS this is where a stale key set gets refreshed, as it would be
      // on a full verification.
      current = await keys(entry.header, { payload: "", signature: "", protected: "" });
    } catch {
      current = undefined;
    }
    if (current !== entry.key) {
      cache.delete(token);
      return undefined;
    }
    cache.delete(token);
    cache.set(token, entry);
    return entry.caller;
  };

  return async (token) => {
    if (cacheSize <= 0) return (await verifyFully(token)).caller;
    const hit = await lookUp(token);
    if (hit !== undefined) return hit;
    const entry = await verifyFully(token);
    cache.delete(token);
    cache.set(token, entry);
    while (cache.size > cacheSize) {
      const oldest = cache.keys().next().value;
      if (oldest === undefined) break;
      cache.delete(oldest);
    }
    return entry.caller;
  };
}

/**
 * Methods anyone may call without a token, as `package.Service.Method`: browsing the
 * catalog, signing up and in, the JWKS. The edge's generator (edge/envoy/generate.ts)
 * reads this list, so Envoy skips its JWT requirement for exactly these.
 */
export const PUBLIC_METHODS: ReadonlySet<string> = new Set([
  "meshmart.catalog.v1.CatalogService.GetProduct",
  "meshmart.catalog.v1.CatalogService.ListProducts",
  "meshmart.catalog.v1.CatalogService.ListCategories",
  "meshmart.identity.v1.IdentityService.SignUp",
  "meshmart.identity.v1.IdentityService.Login",
  "meshmart.identity.v1.IdentityService.RefreshToken",
  "meshmart.identity.v1.IdentityService.GetJwks",
]);

/**
 * Puts the verified caller into the context for handlers. A request without a token is
 * anonymous (handlers that need a caller say so with {@link requireCaller}). A bad token
 * (malformed, expired, forged, or unverifiable here) is refused outright, since a client
 * sending one expects to be known; except on a public method, which answers the same to
 * everyone: there the call goes on as anonymous. A browser holding a stale token from
 * yesterday's session can still browse the catalog, sign in again or refresh.
 */
export function createAuthInterceptor(
  verify: TokenVerifier | undefined,
  publicMethods: ReadonlySet<string> = PUBLIC_METHODS,
): Interceptor {
  const authenticate = async (header: string): Promise<Caller> => {
    const match = /^Bearer\s+(\S+)$/i.exec(header);
    if (match?.[1] === undefined) {
      throw new ConnectError("authorization header must be 'Bearer <token>'", Code.Unauthenticated);
    }
    if (verify === undefined) {
      throw new ConnectError(
        "this service cannot verify tokens (no JWKS configured)",
        Code.Unauthenticated,
      );
    }
    try {
      return await verify(match[1]);
    } catch {
      // The reason (expired, bad signature, wrong audience) stays server-side: telling
      // a forger which check failed helps them.
      throw new ConnectError("invalid or expired access token", Code.Unauthenticated);
    }
  };
  const withCaller = async <R>(
    req: Parameters<Parameters<Interceptor>[0]>[0],
    header: string,
    next: (req: Parameters<Parameters<Interceptor>[0]>[0]) => Promise<R>,
  ): Promise<R> => {
    let caller: Caller | undefined;
    try {
      caller = await authenticate(header);
    } catch (reason) {
      if (!publicMethods.has(`${req.service.typeName}.${req.method.name}`)) throw reason;
    }
    if (caller !== undefined) req.contextValues.set(callerKey, caller);
    return next(req);
  };
  // Anonymous calls hand on next(req)'s own promise (no async wrapper, no extra microtask);
  // failures still surface as rejections, never as synchronous throws.
  return (next) => (req) => {
    try {
      const header = req.header.get("authorization");
      return header === null ? next(req) : withCaller(req, header, next);
    } catch (reason) {
      return Promise.reject(reason);
    }
  };
}

/** The caller, or UNAUTHENTICATED when the request carried no token. */
export function requireCaller(ctx: Pick<HandlerContext, "values">): Caller {
  const caller = ctx.values.get(callerKey);
  if (caller === undefined) throw new ConnectError("authentication required", Code.Unauthenticated);
  return caller;
}

/** The caller if they hold `role`; UNAUTHENTICATED without a token, PERMISSION_DENIED without the role. */
export function requireRole(ctx: Pick<HandlerContext, "values">, role: string): Caller {
  const caller = requireCaller(ctx);
  if (!caller.roles.includes(role)) {
    throw new ConnectError(`role '${role}' required`, Code.PermissionDenied);
  }
  return caller;
}
