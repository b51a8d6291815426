import type { Redis } from "ioredis";
import type { Runtime } from "../runtime.js";
import type { DependencyCheck } from "../server/health-monitor.js";
import { migrate } from "./migrations.js";
import { createPostgres, postgresCheck, type Sql } from "./postgres.js";
import { createRedis, redisCheck } from "./redis.js";

/** A service's own database (migrated) and its Redis, with their health checks. */
export interface ServiceData {
  sql: Sql;
  redis: Redis;
  /** Postgres (critical) and Redis (degrades only), for `serve`. */
  checks: DependencyCheck[];
  /** Ends the pool (waiting up to `timeoutS` for queries) and disconnects Redis. */
  close(timeoutS?: number): Promise<void>;
}

/** Where a service's data lives. */
export interface ServiceDataOptions {
  databaseUrl: string;
  redisUrl: string;
  /** The service's `migrations/` folder, applied before anything else runs. */
  migrations: URL;
}

/**
 * Opens the pool and the Redis client every service starts with and applies the
 * migrations; if they fail, both are closed again before the error propagates, so a
 * failed start leaves nothing open.
 */
export async function openServiceData(
  runtime: Runtime,
  options: ServiceDataOptions,
): Promise<ServiceData> {
  const { logger, registry, config } = runtime;
  const sql = createPostgres({
    url: options.databaseUrl,
    service: config.SERVICE_NAME,
    logger,
    registry,
    max: config.DATABASE_POOL_MAX,
  });
  const redis = createRedis({ url: options.redisUrl, logger });
  const close = async (timeoutS = 5) => {
    await sql.end({ timeout: timeoutS });
    redis.disconnect();
  };
  try {
    await migrate(sql, options.migrations, logger);
  } catch (reason) {
    await close(1);
    throw reason;
  }
  return { sql, redis, checks: [postgresCheck(sql), redisCheck(redis)], close };
}
