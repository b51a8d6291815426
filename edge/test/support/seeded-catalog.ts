import { startCatalog } from "@meshmart/catalog";
import { catalogConfigSchema } from "@meshmart/catalog/config";
import { loadConfig, type ServiceHost, type TokenVerifier } from "@meshmart/kit";
import {
  createLogSink,
  createTestDatabase,
  openTestEvents,
  testRedisUrl,
  uniqueName,
} from "@meshmart/kit/testing";

/** A running catalog for the edge's tests, and how to take it all down again. */
export interface SeededCatalog {
  host: ServiceHost;
  /** Stops catalog, drops its database, deletes its event streams. */
  close(): Promise<void>;
}

/**
 * A real catalog on port 0 with the demo catalog seeded, on its own database, event
 * namespace and cache prefix: what the edge's integration tests call through. Tokens are
 * verified with `auth.verifier` in process, or fetched from `auth.jwksUrl` as in production.
 */
export async function startSeededCatalog(
  label: string,
  auth: { verifier: TokenVerifier } | { jwksUrl: string },
): Promise<SeededCatalog> {
  const [events, db, redisUrl] = await Promise.all([
    openTestEvents(label),
    createTestDatabase(label),
    testRedisUrl(),
  ]);
  const close = async (host?: ServiceHost) => {
    await host?.close();
    await db.drop();
    await events.close();
  };
  try {
    const config = loadConfig(catalogConfigSchema, {
      SERVICE_NAME: "catalog",
      GRPC_PORT: "0",
      HTTP_PORT: "0",
      ADMIN_PORT: "0",
      LOG_LEVEL: "warn",
      DATABASE_URL: db.url,
      REDIS_URL: redisUrl,
      ...events.env,
      CACHE_PREFIX: `${uniqueName(label)}:`,
      SEED_DEMO: "true",
      ...("jwksUrl" in auth ? { AUTH_JWKS_URL: auth.jwksUrl } : {}),
    });
    const host = await startCatalog(config, {
      ...("verifier" in auth ? { verifier: auth.verifier } : {}),
      logDestination: createLogSink().stream,
    });
    return { host, close: () => close(host) };
  } catch (reason) {
    await close();
    throw reason;
  }
}
