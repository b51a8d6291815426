import { createHash } from "node:crypto";
import type { Logger } from "@meshmart/kit";
import type { Redis } from "ioredis";

/** Limits on failed logins, counted in Redis with a fixed window per key. */
export interface ThrottleLimits {
  perAccount: number;
  perClient: number;
  windowS: number;
}

/** Who is logging in: the account's email and, when known, the client address. */
export interface LoginAttempt {
  email: string;
  client: string | undefined;
}

/** Failed-login counters. Fails open (logged) when Redis is unavailable. */
export interface LoginThrottle {
  /** Seconds to wait when a limit is reached, undefined when the attempt may proceed. */
  blockedFor(attempt: LoginAttempt): Promise<number | undefined>;
  recordFailure(attempt: LoginAttempt): Promise<void>;
  /** A successful login clears the account's counter (not the client's). */
  recordSuccess(attempt: LoginAttempt): Promise<void>;
}

export function createLoginThrottle(options: {
  redis: Redis;
  prefix: string;
  limits: ThrottleLimits;
  logger: Logger;
}): LoginThrottle {
  const { redis, prefix, limits, logger } = options;
  // Emails are personal data: keys carry a hash of the address, not the address.
  const accountKey = (email: string) =>
    `${prefix}login:account:${createHash("sha256").update(email.toLowerCase()).digest("base64url")}`;
  const clientKey = (client: string) => `${prefix}login:client:${client}`;
  const keysOf = (a: LoginAttempt) => [
    { key: accountKey(a.email), limit: limits.perAccount },
    ...(a.client === undefined ? [] : [{ key: clientKey(a.client), limit: limits.perClient }]),
  ];
  const unavailable = (reason: unknown) =>
    logger.warn(
      { err: reason instanceof Error ? reason.message : String(reason) },
      "login throttle unavailable (redis): failing open",
    );

  return {
    async blockedFor(attempt) {
      try {
        const keys = keysOf(attempt);
        const pipeline = redis.pipeline();
        for (const { key } of keys) pipeline.get(key).ttl(key);
        const results = (await pipeline.exec()) ?? [];
        let wait: number | undefined;
        keys.forEach(({ limit }, i) => {
          const [countErr, count] = results[i * 2] ?? [];
          const [ttlErr, ttl] = results[i * 2 + 1] ?? [];
          if (countErr || ttlErr) throw countErr ?? ttlErr;
          if (Number(count ?? 0) >= limit) {
            const seconds = Math.max(1, Number(ttl));
            wait = Math.max(wait ?? 0, seconds);
          }
        });
        return wait;
      } catch (reason) {
        unavailable(reason);
        return undefined;
      }
    },

    async recordFailure(attempt) {
      try {
        const multi = redis.multi();
        for (const { key } of keysOf(attempt)) {
          // The first failure opens the window; later ones count inside it.
          multi.set(key, 0, "EX", limits.windowS, "NX").incr(key);
        }
        await multi.exec();
      } catch (reason) {
        unavailable(reason);
      }
    },

    async recordSuccess(attempt) {
      try {
        await redis.del(accountKey(attempt.email));
      } catch (reason) {
        unavailable(reason);
      }
    },
  };
}

/** The client address: the first hop of x-forwarded-for (set by the edge / sidecar). */
export function clientAddress(headers: Headers): string | undefined {
  const first = headers.get("x-forwarded-for")?.split(",")[0]?.trim();
  return first === undefined || first === "" ? undefined : first;
}
