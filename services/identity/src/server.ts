import { randomBytes } from "node:crypto";
import {
  createJwtVerifier,
  instrumentStore,
  type RuntimeOverrides,
  type ServiceHost,
  startService,
} from "@meshmart/kit";
import type { JWTVerifyGetKey } from "jose";
import { bootstrapAdmin } from "./bootstrap.js";
import type { IdentityConfig } from "./config.js";
import { createJwksListener } from "./jwks-http.js";
import { createKeyRing, type KeyRing } from "./keys.js";
import { hashPassword } from "./passwords.js";
import { createIdentityRoutes } from "./routes.js";
import { createIdentityStore } from "./store.js";
import { createLoginThrottle } from "./throttle.js";
import { createTokenIssuer } from "./tokens.js";

/** Identity's migrations folder. */
export const migrationsDir = new URL("../migrations/", import.meta.url);

/**
 * Starts identity: migrates, makes sure a signing key exists, bootstraps the first admin,
 * and serves RPCs plus `GET /.well-known/jwks.json` on the HTTP port. Identity verifies
 * its own tokens from its key store (no JWKS round trip to itself) unless `overrides`
 * brings a verifier.
 */
export function startIdentity(
  config: IdentityConfig,
  overrides: RuntimeOverrides = {},
): Promise<ServiceHost> {
  let keyRing: KeyRing | undefined;
  const getKey: JWTVerifyGetKey = (header, token) => {
    if (keyRing === undefined) throw new Error("identity is starting");
    return keyRing.getKey(header, token);
  };
  return startService(
    config,
    {
      ...overrides,
      verifier:
        overrides.verifier ??
        createJwtVerifier({
          keys: getKey,
          issuer: config.AUTH_ISSUER,
          audience: config.AUTH_AUDIENCE,
        }),
    },
    {
      migrations: migrationsDir,
      publishes: ["identity"],
      build: async ({ runtime, data, events }) => {
        const { logger, registry } = runtime;
        const { sql, redis } = data;
        const store = instrumentStore(createIdentityStore(sql, events.names), "identity", registry);
        const keys = createKeyRing({ store, kek: config.IDENTITY_KEY_ENCRYPTION_KEY });
        await keys.ensureActiveKey();
        keyRing = keys;
        await bootstrapAdmin(
          store,
          logger,
          config.IDENTITY_BOOTSTRAP_ADMIN_EMAIL,
          config.IDENTITY_BOOTSTRAP_ADMIN_PASSWORD,
        );
        const routes = createIdentityRoutes({
          store,
          keys,
          tokens: createTokenIssuer({
            keys,
            issuer: config.AUTH_ISSUER,
            audience: config.AUTH_AUDIENCE,
            accessTtlS: config.ACCESS_TOKEN_TTL_S,
          }),
          throttle: createLoginThrottle({
            redis,
            prefix: config.IDENTITY_REDIS_PREFIX,
            limits: {
              perAccount: config.LOGIN_MAX_FAILURES_PER_ACCOUNT,
              perClient: config.LOGIN_MAX_FAILURES_PER_CLIENT,
              windowS: config.LOGIN_THROTTLE_WINDOW_S,
            },
            logger,
          }),
          logger,
          refreshTtlS: config.REFRESH_TOKEN_TTL_S,
          dummyPasswordHash: await hashPassword(randomBytes(16).toString("base64url")),
        });
        return { routes, httpFallback: createJwksListener(keys, logger) };
      },
    },
  );
}
