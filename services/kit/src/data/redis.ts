import { Redis } from "ioredis";
import type { Logger } from "pino";
import type { DependencyCheck } from "../server/health-monitor.js";

/** Options for {@link createRedis}. */
export interface RedisOptions {
  url: string;
  logger: Logger;
}

/**
 * A Redis client for cache use. Commands fail at once while disconnected (no offline
 * queue, one try per command) because a cache that blocks is worse than no cache:
 * callers fall back to the source of truth. It reconnects in the background with
 * capped backoff.
 */
export function createRedis(options: RedisOptions): Redis {
  const redis = new Redis(options.url, {
    lazyConnect: false,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: 2_000,
    // Shutdown should not wait on a Redis that never answered.
    disconnectTimeout: 200,
    commandTimeout: 500,
    retryStrategy: (attempt) => Math.min(attempt * 200, 2_000),
    // Commands issued in the same tick share one socket write: under concurrent load
    // a write per GET is most of a cache hit's cost.
    enableAutoPipelining: true,
  });
  let down = false;
  redis.on("error", (err: Error) => {
    if (!down) options.logger.warn({ err: err.message }, "redis unavailable");
    down = true;
  });
  redis.on("ready", () => {
    if (down) options.logger.info("redis back");
    down = false;
  });
  return redis;
}

/** Health check for a cache: non-critical, so its loss degrades rather than stops the service. */
export function redisCheck(redis: Redis, name = "redis"): DependencyCheck {
  return {
    name,
    critical: false,
    probe: async () => {
      await redis.ping();
    },
  };
}
