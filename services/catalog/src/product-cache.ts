import type { Redis } from "ioredis";
import { Counter, type Registry } from "prom-client";

/** What a cache lookup found. */
export type CacheLookup =
  | { kind: "hit"; payload: Uint8Array }
  | { kind: "deleted" }
  | { kind: "miss" };

/** Cache-aside for GetProduct, keyed by product id, values versioned. */
export interface ProductCache {
  get(id: string): Promise<CacheLookup>;
  /** Stores `payload` unless the cache already holds this or a newer version. */
  put(id: string, version: bigint, payload: Uint8Array): Promise<void>;
  /** Marks the product deleted at `version`, so a slow reader cannot bring it back. */
  markDeleted(id: string, version: bigint): Promise<void>;
}

/** Options for {@link createProductCache}. */
export interface ProductCacheOptions {
  redis: Redis;
  /** Key prefix: per deployment, and per run in tests. */
  prefix: string;
  ttlMs: number;
  registry: Registry;
}

// Entries are "<version>|<payload>". The compare-and-set keeps the newest version even
// when a reader that loaded an old row from Postgres writes after an update or delete
// already refreshed the entry: the stale write is simply refused.
const PUT_IF_NEWER = `
local current = redis.call('GET', KEYS[1])
if current then
  local v = tonumber(string.match(current, '^(%d+)|'))
  if v and v >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'PX', ARGV[3])
return 1`;

const TOMBSTONE = "";

/**
 * Redis cache-aside with versioned entries. Every failure (Redis down, timeout) is
 * swallowed and counted: the caller then reads Postgres, which is always right.
 */
export function createProductCache(options: ProductCacheOptions): ProductCache {
  const { redis, prefix, ttlMs } = options;
  const lookups = new Counter({
    name: "cache_lookups_total",
    help: "Product cache lookups by result (hit, miss, deleted, error).",
    labelNames: ["cache", "result"] as const,
    registers: [options.registry],
  });
  const writeErrors = new Counter({
    name: "cache_write_errors_total",
    help: "Product cache writes that failed (Redis unavailable or slow).",
    labelNames: ["cache"] as const,
    registers: [options.registry],
  });
  const results = {
    hit: lookups.labels({ cache: "product", result: "hit" }),
    miss: lookups.labels({ cache: "product", result: "miss" }),
    deleted: lookups.labels({ cache: "product", result: "deleted" }),
    error: lookups.labels({ cache: "product", result: "error" }),
  };
  const key = (id: string) => `${prefix}product:${id}`;
  const write = async (id: string, version: bigint, payload: Buffer | string) => {
    try {
      await redis.eval(PUT_IF_NEWER, 1, key(id), version.toString(), payload, ttlMs.toString());
    } catch {
      writeErrors.inc({ cache: "product" });
    }
  };
  return {
    async get(id) {
      let raw: Buffer | null;
      try {
        raw = await redis.getBuffer(key(id));
      } catch {
        results.error.inc();
        return { kind: "miss" };
      }
      if (raw === null) {
        results.miss.inc();
        return { kind: "miss" };
      }
      const bar = raw.indexOf(0x7c);
      const payload = raw.subarray(bar + 1);
      if (bar < 0 || payload.length === TOMBSTONE.length) {
        results.deleted.inc();
        return { kind: "deleted" };
      }
      results.hit.inc();
      return { kind: "hit", payload };
    },
    put: (id, version, payload) =>
      write(id, version, Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength)),
    markDeleted: (id, version) => write(id, version, TOMBSTONE),
  };
}
