/**
 * Rotates identity's signing key: a new active key signs from now on; the previous one
 * stays published (JWKS) until tokens it signed have expired, then a later rotation
 * retires it. Run with the service's environment:
 *   node --conditions=development --import tsx services/identity/src/rotate-keys.ts
 * Replicas pick the new key up within their key cache lifetime (30 s).
 */
import { pathToFileURL } from "node:url";
import {
  ConfigError,
  createEventNames,
  createLogger,
  createPostgres,
  loadConfig,
  migrate,
} from "@meshmart/kit";
import { Registry } from "prom-client";
import type { z } from "zod";
import { identityConfigSchema } from "./config.js";
import { createKeyRing } from "./keys.js";
import { migrationsDir } from "./server.js";
import { createIdentityStore } from "./store.js";

export const rotateConfigSchema = identityConfigSchema.pick({
  DATABASE_URL: true,
  IDENTITY_KEY_ENCRYPTION_KEY: true,
  ACCESS_TOKEN_TTL_S: true,
  LOG_LEVEL: true,
});

/** Rotates once; returns the new kid and the kids retired. */
export async function rotateSigningKeys(
  config: z.infer<typeof rotateConfigSchema>,
): Promise<{ kid: string; retired: string[] }> {
  const logger = createLogger({ service: "identity-rotate-keys", level: config.LOG_LEVEL });
  const sql = createPostgres({
    url: config.DATABASE_URL,
    service: "identity",
    logger,
    registry: new Registry(),
  });
  try {
    await migrate(sql, migrationsDir, logger);
    const keys = createKeyRing({
      // Rotation writes no events; the names only satisfy the store's signature.
      store: createIdentityStore(sql, createEventNames()),
      kek: config.IDENTITY_KEY_ENCRYPTION_KEY,
    });
    const result = await keys.rotate(config.ACCESS_TOKEN_TTL_S);
    logger.info(result, "signing key rotated");
    return result;
  } finally {
    await sql.end({ timeout: 5 });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  try {
    await rotateSigningKeys(loadConfig(rotateConfigSchema));
  } catch (reason) {
    console.error(reason instanceof ConfigError ? reason.message : reason);
    process.exitCode = 1;
  }
}
