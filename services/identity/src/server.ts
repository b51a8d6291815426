import { randomBytes } from "node:crypto";
import {
  createJwtVerifier,
  createRuntime,
  instrumentStore,
  migrateEventTables,
  openServiceData,
  openServiceEvents,
  type RuntimeOverrides,
  type ServiceHost,
  serve,
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
export async function startIdentity(
  config: IdentityConfig,
  overrides: RuntimeOverrides = {},
): Promise<ServiceHost> {
  let keyRing: KeyRing | undefined;
  const getKey: JWTVerifyGetKey = (header, token) => {
    if (keyRing === undefined) throw new Error("identity is starting");
    return keyRing.getKey(header, token);
  };
  const runtime = await createRuntime(config, {
    ...overrides,
    verifier:
      overrides.verifier ??
      createJwtVerifier({
        keys: getKey,
        issuer: config.AUTH_ISSUER,
        audience: config.AUTH_AUDIENCE,
      }),
  });
  const { logger, registry } = runtime;
  const data = await openServiceData(runtime, {
    databaseUrl: config.DATABASE_URL,
    redisUrl: config.REDIS_URL,
    migrations: migrationsDir,
  });
  const { sql, redis } = data;
  try {
    await migrateEventTables(sql, logger);
    const events = await openServiceEvents(runtime, { sql, config, publishes: ["identity"] });
    try {
      const names = events.names;
      const store = instrumentStore(createIdentityStore(sql, names), "identity", registry);
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
      events.startRelay();
      return await serve(runtime, {
        routes,
        checks: [...data.checks, ...events.checks],
        httpFallback: createJwksListener(keys, logger),
        onClose: async () => {
          await events.close();
          await data.close();
        },
      });
    } catch (reason) {
      await events.close();
      throw reason;
    }
  } catch (reason) {
    await data.close(1);
    throw reason;
  }
}
