/**
 * Rate limits of the local edge (the stand-in for Envoy's local_ratelimit + ratelimit):
 *
 * - Per client: in-memory token buckets, keyed by user (JWT `sub`) for requests with a
 *   verified token and by client IP otherwise. Every method shares the default bucket of a
 *   client unless it has an override, which gets its own bucket (Login/SignUp stricter).
 * - Global: one fixed one-second window per edge fleet in Redis (INCR + PEXPIRE), shared by
 *   every replica with the same key prefix. Fails open (with a warning) when Redis is down.
 *
 * Configuration (see config.ts):
 *   EDGE_RATE_LIMIT=20/40                 default rate (tokens/s) / burst; unset or "off" = none
 *   EDGE_RATE_LIMITS=Login=1/5,SignUp=0.5/3   per-method overrides, by method name or full
 *                                         name (meshmart.identity.v1.IdentityService.Login);
 *                                         "off" exempts a method
 *   EDGE_GLOBAL_RATE_LIMIT=1000           requests/s across all replicas (needs EDGE_REDIS_URL)
 */
import type { Redis } from "ioredis";
import type { Logger } from "pino";

/** Tokens per second and bucket size. */
export interface Rate {
  rate: number;
  burst: number;
}

export interface RateLimitConfig {
  /** The default per-client limit; undefined = no per-client limit except overrides. */
  default: Rate | undefined;
  /** Method (short or full name) → its own limit, or "off" for none. */
  perMethod: Record<string, Rate | "off">;
  /** Buckets kept at most; idle (full) buckets are evicted first, then the oldest. */
  maxKeys: number;
}

/** Parses "20/40" (rate/burst; burst defaults to max(1, rate)) or "off". */
export function parseRate(text: string): Rate | "off" {
  const item = text.trim();
  if (item === "off") return "off";
  const match = /^(\d+(?:\.\d+)?)(?:\/(\d+))?$/.exec(item);
  const rate = Number(match?.[1]);
  if (match === null || !(rate > 0)) {
    throw new Error(`bad rate "${item}": expected rate/burst (e.g. 10/20) or off`);
  }
  const burst = match[2] === undefined ? Math.max(1, Math.ceil(rate)) : Number(match[2]);
  if (burst < 1) throw new Error(`bad rate "${item}": burst must be at least 1`);
  return { rate, burst };
}

/** Parses "Login=1/5,SignUp=0.5/3,GetProduct=off". */
export function parseRateOverrides(text: string): Record<string, Rate | "off"> {
  const out: Record<string, Rate | "off"> = {};
  for (const part of text.split(",")) {
    const item = part.trim();
    if (item === "") continue;
    const eq = item.indexOf("=");
    const name = item.slice(0, eq).trim();
    if (eq <= 0 || !/^[\w.]+$/.test(name)) {
      throw new Error(`bad rate override "${item}": expected Method=rate/burst`);
    }
    out[name] = parseRate(item.slice(eq + 1));
  }
  return out;
}

/** The verdict: allowed, or refused with the seconds after which a retry may pass. */
export type Verdict = { ok: true } | { ok: false; retryAfterSeconds: number; scope: string };

interface Bucket {
  tokens: number;
  last: number;
  rate: number;
  burst: number;
}

export interface LocalLimiter {
  /** Takes one token for `client` (e.g. "ip:1.2.3.4", "user:…") calling `method` (full name). */
  take(client: string, method: string, now?: number): Verdict;
  /** Buckets held (tests, metrics). */
  size(): number;
  close(): void;
}

export function createLocalLimiter(config: RateLimitConfig): LocalLimiter {
  const buckets = new Map<string, Bucket>();
  const limitOf = (method: string): { key: string; rate: Rate } | undefined => {
    const short = method.slice(method.lastIndexOf(".") + 1);
    const own = config.perMethod[method] ?? config.perMethod[short];
    if (own === "off") return undefined;
    if (own !== undefined) return { key: method, rate: own };
    return config.default === undefined ? undefined : { key: "*", rate: config.default };
  };
  const refill = (b: Bucket, now: number) => {
    b.tokens = Math.min(b.burst, b.tokens + ((now - b.last) / 1000) * b.rate);
    b.last = now;
  };
  /** Drops buckets that have refilled completely: they hold no information. */
  const sweep = (now: number) => {
    for (const [key, b] of buckets) {
      refill(b, now);
      if (b.tokens >= b.burst) buckets.delete(key);
    }
  };
  const timer = setInterval(() => sweep(performance.now()), 10_000);
  timer.unref();
  return {
    take(client, method, now = performance.now()) {
      const limit = limitOf(method);
      if (limit === undefined) return { ok: true };
      const key = `${client}|${limit.key}`;
      let b = buckets.get(key);
      if (b === undefined) {
        if (buckets.size >= config.maxKeys) {
          sweep(now);
          // Still full: forget the oldest (Map order is insertion order).
          for (const oldest of buckets.keys()) {
            if (buckets.size < config.maxKeys) break;
            buckets.delete(oldest);
          }
        }
        b = { tokens: limit.rate.burst, last: now, ...limit.rate };
        buckets.set(key, b);
      } else {
        refill(b, now);
      }
      if (b.tokens >= 1) {
        b.tokens -= 1;
        return { ok: true };
      }
      return {
        ok: false,
        retryAfterSeconds: Math.max(1, Math.ceil((1 - b.tokens) / b.rate)),
        scope: limit.key === "*" ? "client" : limit.key,
      };
    },
    size: () => buckets.size,
    close: () => clearInterval(timer),
  };
}

export interface GlobalLimiter {
  take(): Promise<Verdict>;
}

/**
 * A fixed one-second window shared through Redis: `<prefix>rl:global:<unix second>`. Fails
 * open when Redis does not answer, logging a warning at most every 10 s.
 */
export function createGlobalLimiter(
  redis: Redis,
  options: { limit: number; prefix: string; logger: Logger },
): GlobalLimiter {
  let lastWarn = 0;
  return {
    async take() {
      const now = Date.now();
      const second = Math.floor(now / 1000);
      const key = `${options.prefix}rl:global:${second}`;
      try {
        const results = await redis.multi().incr(key).pexpire(key, 2_000).exec();
        const count = Number(results?.[0]?.[1]);
        if (!Number.isFinite(count)) throw new Error("no INCR result");
        if (count <= options.limit) return { ok: true };
        return { ok: false, retryAfterSeconds: 1, scope: "global" };
      } catch (reason) {
        if (now - lastWarn > 10_000) {
          lastWarn = now;
          options.logger.warn(
            { err: reason instanceof Error ? reason.message : String(reason) },
            "global rate limit unavailable (redis); failing open",
          );
        }
        return { ok: true };
      }
    },
  };
}
