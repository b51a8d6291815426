import { randomBytes } from "node:crypto";
import { type CallOptions, type Client, createClient } from "@connectrpc/connect";
import { createEventNames, createJwtVerifier, createRedis, type Sql } from "@meshmart/kit";
import { IdentityService } from "@meshmart/kit/gen/meshmart/identity/v1/identity_service_pb.js";
import {
  createTestTransport,
  deleteKeys,
  type LogSink,
  openServiceTestDatabase,
  type TestDatabase,
  testAudience,
  testIssuerName,
  testRedisUrl,
  uniqueName,
} from "@meshmart/kit/testing";
import { Redis } from "ioredis";
import { createKeyRing, type KeyRing } from "../../src/keys.js";
import { hashPassword } from "../../src/passwords.js";
import { createIdentityRoutes } from "../../src/routes.js";
import { migrationsDir } from "../../src/server.js";
import { createIdentityStore, type IdentityStore } from "../../src/store.js";
import { createLoginThrottle, type ThrottleLimits } from "../../src/throttle.js";
import { createTokenIssuer, type TokenIssuer } from "../../src/tokens.js";

export const ACCESS_TTL_S = 900;

/**
 * Identity's handlers wired as `startIdentity` wires them, served in memory through the
 * production interceptor chain (verifying tokens from identity's own key store), over a
 * fresh database and a run-unique Redis prefix.
 */
export interface IdentityFixture {
  client: Client<typeof IdentityService>;
  sql: Sql;
  store: IdentityStore;
  keys: KeyRing;
  tokens: TokenIssuer;
  kek: Buffer;
  prefix: string;
  db: TestDatabase;
  /** The service's logs and the interceptors' (access) logs. */
  logs: LogSink;
  rpcLogs: LogSink;
  close(): Promise<void>;
}

export async function createIdentityFixture(
  label: string,
  limits: ThrottleLimits = { perAccount: 3, perClient: 5, windowS: 900 },
): Promise<IdentityFixture> {
  const [database, redisUrl] = await Promise.all([
    openServiceTestDatabase({ label, service: "identity", migrations: migrationsDir }),
    testRedisUrl(),
  ]);
  const { db, sql, logger, logs } = database;
  const prefix = `${uniqueName(label)}:`;
  const kek = randomBytes(32);
  const redis = createRedis({ url: redisUrl, logger });
  const store = createIdentityStore(sql, createEventNames());
  const keys = createKeyRing({ store, kek });
  await keys.ensureActiveKey();
  const tokens = createTokenIssuer({
    keys,
    issuer: testIssuerName,
    audience: testAudience,
    accessTtlS: ACCESS_TTL_S,
  });
  const verifier = createJwtVerifier({
    keys: keys.getKey,
    issuer: testIssuerName,
    audience: testAudience,
  });
  const { transport, logs: rpcLogs } = createTestTransport(
    createIdentityRoutes({
      store,
      keys,
      tokens,
      throttle: createLoginThrottle({ redis, prefix, limits, logger }),
      logger,
      refreshTtlS: 3600,
      dummyPasswordHash: await hashPassword("not-a-real-password"),
    }),
    { verifier },
  );
  return {
    client: createClient(IdentityService, transport),
    sql,
    store,
    keys,
    tokens,
    kek,
    prefix,
    db,
    logs,
    rpcLogs,
    async close() {
      const admin = new Redis(redisUrl);
      try {
        await deleteKeys(admin, prefix);
      } finally {
        admin.disconnect();
      }
      redis.disconnect();
      await database.close();
    },
  };
}

export function bearer(token: string, headers: Record<string, string> = {}): CallOptions {
  return { headers: { authorization: `Bearer ${token}`, ...headers } };
}

export { rejection, violationsOf } from "@meshmart/kit/testing";
export { deleteKeys };
