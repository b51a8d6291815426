/**
 * Rate limits: the token buckets on their own (with a fake clock), then through a running
 * edge (429 + Retry-After, recovery, per-user vs per-IP), and the Redis-backed global limit
 * shared by two edges. No upstream is configured: an admitted request answers 503, a
 * refused one 429, which is all these tests need to tell them apart.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { TokenVerifier } from "@meshmart/kit";
import { createLogSink, testRedisUrl, uniqueName } from "@meshmart/kit/testing";
import { createLocalLimiter, parseRate, parseRateOverrides } from "../src/rate-limit.js";
import { edgeConfigSchema, type RunningEdge, startEdge } from "../src/server.js";

/** Tokens "user-a", "user-b" verify as those users; anything else fails. */
const verifier: TokenVerifier = async (token) => {
  if (!token.startsWith("user-")) throw new Error("bad token");
  return { userId: token, email: "", roles: ["customer"], token };
};

describe("rate limit config", () => {
  test("parses rate/burst, bare rates, off, and overrides", () => {
    assert.deepEqual(parseRate("10/20"), { rate: 10, burst: 20 });
    assert.deepEqual(parseRate("0.5"), { rate: 0.5, burst: 1 });
    assert.equal(parseRate("off"), "off");
    assert.throws(() => parseRate("0/1"));
    assert.throws(() => parseRate("fast"));
    assert.deepEqual(parseRateOverrides("Login=1/5, SignUp=off"), {
      Login: { rate: 1, burst: 5 },
      SignUp: "off",
    });
    assert.throws(() => parseRateOverrides("Login"));
    assert.throws(() =>
      edgeConfigSchema.parse({ EDGE_GLOBAL_RATE_LIMIT: "5" /* without EDGE_REDIS_URL */ }),
    );
    assert.throws(() => edgeConfigSchema.parse({ EDGE_RATE_LIMITS: "Login=x" }));
  });

  test("HTTP upstreams default to the gRPC port + 100; explicit ones win", () => {
    const config = edgeConfigSchema.parse({
      UPSTREAMS: "catalog=127.0.0.1:9102,identity=127.0.0.1:9101",
      IDENTITY_HTTP_ADDR: "127.0.0.1:7000",
    });
    assert.deepEqual(config.httpUpstreams, {
      catalog: "127.0.0.1:9202",
      identity: "127.0.0.1:7000",
    });
  });
});

describe("token buckets", () => {
  const full = "meshmart.catalog.v1.CatalogService.GetProduct";
  const login = "meshmart.identity.v1.IdentityService.Login";

  test("burst, refusal with Retry-After, refill; overrides get their own bucket", () => {
    const limiter = createLocalLimiter({
      default: { rate: 2, burst: 3 },
      perMethod: { Login: { rate: 0.2, burst: 1 }, ListCategories: "off" },
      maxKeys: 100,
    });
    try {
      for (let i = 0; i < 3; i++) assert.ok(limiter.take("ip:a", full, 0).ok);
      const refused = limiter.take("ip:a", full, 0);
      assert.deepEqual(refused, { ok: false, retryAfterSeconds: 1, scope: "client" });
      assert.ok(limiter.take("ip:a", full, 500).ok, "one token back after 1/rate s");
      assert.ok(limiter.take("ip:b", full, 500).ok, "another client has its own bucket");
      assert.ok(limiter.take("ip:a", login, 500).ok, "Login: own bucket");
      const slow = limiter.take("ip:a", login, 600);
      assert.equal(slow.ok, false);
      assert.equal(!slow.ok && slow.retryAfterSeconds, 5);
      for (let i = 0; i < 50; i++) {
        assert.ok(limiter.take("ip:a", "meshmart.catalog.v1.CatalogService.ListCategories").ok);
      }
    } finally {
      limiter.close();
    }
  });

  test("memory stays bounded: idle buckets are evicted, then the oldest", () => {
    const limiter = createLocalLimiter({
      default: { rate: 1, burst: 2 },
      perMethod: {},
      maxKeys: 10,
    });
    try {
      for (let i = 0; i < 1_000; i++) limiter.take(`ip:${i}`, full, i);
      assert.ok(limiter.size() <= 10, String(limiter.size()));
    } finally {
      limiter.close();
    }
  });
});

describe("rate limits through the edge", { timeout: 30_000 }, () => {
  let edge: RunningEdge;
  before(async () => {
    edge = await startEdge(
      edgeConfigSchema.parse({
        EDGE_PORT: "0",
        EDGE_TRUST_FORWARDED: "true",
        EDGE_RATE_LIMIT: "4/2",
        EDGE_RATE_LIMITS: "Login=1/1",
        LOG_LEVEL: "warn",
      }),
      { verifier, logDestination: createLogSink().stream },
    );
  });
  after(() => edge.close());

  const get = (path: string, headers: Record<string, string> = {}) =>
    fetch(`${edge.url}${path}`, { headers });

  test("over the burst → 429 RESOURCE_EXHAUSTED with Retry-After; recovers after refill", async () => {
    const ip = { "x-forwarded-for": "203.0.113.7, 10.0.0.1" };
    assert.equal((await get("/v1/categories", ip)).status, 503);
    assert.equal((await get("/v1/categories", ip)).status, 503);
    const refused = await get("/v1/categories", ip);
    assert.equal(refused.status, 429);
    assert.equal(refused.headers.get("retry-after"), "1");
    assert.deepEqual(await refused.json(), { code: 8, message: "rate limit exceeded" });
    assert.equal((await get("/v1/categories", { "x-forwarded-for": "203.0.113.8" })).status, 503);
    await sleep(300); // 4 tokens/s: one back after 250 ms.
    assert.equal((await get("/v1/categories", ip)).status, 503);
  });

  test("Login has its own, stricter bucket", async () => {
    const ip = { "x-forwarded-for": "203.0.113.20", "content-type": "application/json" };
    const login = () =>
      fetch(`${edge.url}/v1/sessions`, { method: "POST", headers: ip, body: "{}" });
    assert.equal((await login()).status, 503);
    const refused = await login();
    assert.equal(refused.status, 429);
    assert.equal(refused.headers.get("retry-after"), "1");
    assert.equal((await get("/v1/categories", ip)).status, 503, "other routes unaffected");
  });

  test("users are limited per user, separately from their IP", async () => {
    const ip = { "x-forwarded-for": "203.0.113.30" };
    const as = (user: string) => ({ ...ip, authorization: `Bearer ${user}` });
    assert.equal((await get("/v1/orders", as("user-a"))).status, 503);
    assert.equal((await get("/v1/orders", as("user-a"))).status, 503);
    assert.equal((await get("/v1/orders", as("user-a"))).status, 429);
    assert.equal((await get("/v1/orders", as("user-b"))).status, 503, "same IP, other user");
    assert.equal((await get("/v1/categories", ip)).status, 503, "the IP's own bucket is full");
    // Bad tokens are charged to the IP: they cannot be tried for free.
    const bad = { ...ip, authorization: "Bearer forged" };
    assert.equal((await get("/v1/orders", bad)).status, 401);
    assert.equal((await get("/v1/orders", bad)).status, 429);
  });
});

describe("global rate limit in Redis", { timeout: 30_000 }, () => {
  let redisUrl: string;
  before(async () => {
    redisUrl = await testRedisUrl();
  });

  test("two edges sharing a prefix share the limit", async () => {
    const env = {
      EDGE_PORT: "0",
      EDGE_REDIS_URL: redisUrl,
      EDGE_REDIS_PREFIX: `${uniqueName("edge_rl")}:`,
      EDGE_GLOBAL_RATE_LIMIT: "3",
      LOG_LEVEL: "warn",
    };
    const [a, b] = await Promise.all([
      startEdge(edgeConfigSchema.parse(env), { logDestination: createLogSink().stream }),
      startEdge(edgeConfigSchema.parse(env), { logDestination: createLogSink().stream }),
    ]);
    try {
      // Let both connect, then start at the beginning of a fresh one-second window.
      await sleep(1_050 - (Date.now() % 1000));
      const statuses = [];
      for (const edge of [a, b, a, b]) {
        statuses.push((await fetch(`${edge.url}/v1/categories`)).status);
      }
      assert.deepEqual(statuses, [503, 503, 503, 429]);
      const refused = await fetch(`${b.url}/v1/categories`);
      assert.equal(refused.headers.get("retry-after"), "1");
      assert.deepEqual(await refused.json(), { code: 8, message: "edge rate limit exceeded" });
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  test("Redis down → fail open, with a warning", async () => {
    const logs = createLogSink();
    const edge = await startEdge(
      edgeConfigSchema.parse({
        EDGE_PORT: "0",
        EDGE_REDIS_URL: "redis://127.0.0.1:1",
        EDGE_GLOBAL_RATE_LIMIT: "1",
        LOG_LEVEL: "warn",
      }),
      { logDestination: logs.stream },
    );
    try {
      for (let i = 0; i < 3; i++) {
        assert.equal((await fetch(`${edge.url}/v1/categories`)).status, 503);
      }
      assert.ok(logs.text().includes("failing open"), logs.text());
    } finally {
      await edge.close();
    }
  });
});
