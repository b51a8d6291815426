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
}

/**
 * Verifies ES256 access tokens issued by identity against its JWKS (fetched once,
 * cached, refetched when a token names an unknown key id). The edge verified the same
 * token already; checking again here is the mesh's defence in depth.
 */
export function createJwtVerifier(options: JwtVerifierOptions): TokenVerifier {
  const keys = options.keys instanceof URL ? createRemoteJWKSet(options.keys) : options.keys;
  return async (token) => {
    const { payload } = await jwtVerify(token, keys, {
      issuer: options.issuer,
      audience: options.audience,
      algorithms: ["ES256"],
      requiredClaims: ["sub", "exp"],
    });
    const roles = Array.isArray(payload.roles)
      ? payload.roles.filter((r): r is string => typeof r === "string")
      : [];
    return {
      userId: String(payload.sub),
      email: typeof payload.email === "string" ? payload.email : "",
      roles,
      token,
    };
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
  return (next) => async (req) => {
    const header = req.header.get("authorization");
    if (header !== null) {
      let caller: Caller | undefined;
      try {
        caller = await authenticate(header);
      } catch (reason) {
        if (!publicMethods.has(`${req.service.typeName}.${req.method.name}`)) throw reason;
      }
      if (caller !== undefined) req.contextValues.set(callerKey, caller);
    }
    return next(req);
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
