import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { createLogger, createPostgres, loadConfig, type ServiceHost } from "@meshmart/kit";
import {
  createLogSink,
  createTestDatabase,
  type LogSink,
  openTestEvents,
  type TestDatabase,
  type TestEvents,
  testRedisUrl,
  uniqueName,
} from "@meshmart/kit/testing";
import { Redis } from "ioredis";
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from "jose";
import { Registry } from "prom-client";
import { identityConfigSchema } from "../src/config.js";
import { startIdentity } from "../src/server.js";
import { deleteKeys } from "./support/identity-fixture.js";

const execFileAsync = promisify(execFile);
const rotateScript = new URL("../src/rotate-keys.ts", import.meta.url).pathname;
const ADMIN_EMAIL = `admin-${randomUUID()}@example.com`;
const ADMIN_PASSWORD = "bootstrap admin password";

describe("startIdentity", () => {
  let db: TestDatabase;
  let host: ServiceHost;
  let logs: LogSink;
  let redisUrl: string;
  let events: TestEvents;
  const prefix = `${uniqueName("identity_server")}:`;
  const kek = randomBytes(32).toString("base64");

  before(async () => {
    [db, redisUrl, events] = await Promise.all([
      createTestDatabase("identity_server"),
      testRedisUrl(),
      openTestEvents("identity"),
    ]);
    const config = loadConfig(identityConfigSchema, {
      SERVICE_NAME: "identity",
      GRPC_PORT: "0",
      HTTP_PORT: "0",
      ADMIN_PORT: "0",
      LOG_LEVEL: "debug",
      DATABASE_URL: db.url,
      REDIS_URL: redisUrl,
      IDENTITY_KEY_ENCRYPTION_KEY: kek,
      IDENTITY_REDIS_PREFIX: prefix,
      IDENTITY_BOOTSTRAP_ADMIN_EMAIL: ADMIN_EMAIL,
      IDENTITY_BOOTSTRAP_ADMIN_PASSWORD: ADMIN_PASSWORD,
      ...events.env,
    });
    logs = createLogSink();
    host = await startIdentity(config, { logDestination: logs.stream });
  });
  after(async () => {
    await host?.close();
    const redis = new Redis(redisUrl);
    try {
      await deleteKeys(redis, prefix);
    } finally {
      redis.disconnect();
    }
    await db?.drop();
    await events?.close();
  });

  async function rpc(method: string, body: unknown, headers: Record<string, string> = {}) {
    const res = await fetch(`${host.httpUrl}/meshmart.identity.v1.IdentityService/${method}`, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  test("the encryption key is required config", () => {
    assert.throws(
      () =>
        loadConfig(identityConfigSchema, {
          SERVICE_NAME: "identity",
          GRPC_PORT: "0",
          HTTP_PORT: "0",
          ADMIN_PORT: "0",
          DATABASE_URL: db.url,
          REDIS_URL: redisUrl,
        }),
      /IDENTITY_KEY_ENCRYPTION_KEY/,
    );
  });

  test("serves the JWKS over HTTP and its tokens verify against it remotely", async () => {
    const res = await fetch(`${host.httpUrl}/.well-known/jwks.json`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("cache-control"), "public, max-age=60");
    const jwks = (await res.json()) as { keys: Record<string, string>[] };
    assert.equal(jwks.keys.length, 1);
    assert.deepEqual(Object.keys(jwks.keys[0] ?? {}).sort(), [
      "alg",
      "crv",
      "kid",
      "kty",
      "use",
      "x",
      "y",
    ]);

    // The bootstrap admin exists and logs in; its token verifies against the remote JWKS.
    const login = await rpc("Login", { email: ADMIN_EMAIL, password: ADMIN_PASSWORD });
    assert.equal(login.status, 200, JSON.stringify(login.body));
    const token = String(login.body.accessToken);
    const { payload, protectedHeader } = await jwtVerify(
      token,
      createRemoteJWKSet(new URL(`${host.httpUrl}/.well-known/jwks.json`)),
      { issuer: "meshmart-identity", audience: "meshmart", algorithms: ["ES256"] },
    );
    assert.deepEqual(payload.roles, ["customer", "admin"]);
    assert.equal(protectedHeader.kid, jwks.keys[0]?.kid);

    // Identity verifies its own tokens.
    const me = await rpc("GetMe", {}, { authorization: `Bearer ${token}` });
    assert.equal(me.status, 200);
    assert.equal((me.body.user as { email: string }).email, ADMIN_EMAIL);
    assert.equal((await rpc("GetMe", {})).status, 401);
    assert.equal((await fetch(`${host.httpUrl}/.well-known/other`)).status, 404);

    const text = logs.text();
    assert.ok(!text.includes(ADMIN_PASSWORD));
    assert.ok(!text.includes(token));
    assert.ok(!text.includes(String(login.body.refreshToken)));
  });

  test("rotate-keys runs as a command and the old key stays published", async () => {
    const before = (await (await fetch(`${host.httpUrl}/.well-known/jwks.json`)).json()) as {
      keys: { kid: string }[];
    };
    const { stderr } = await execFileAsync(
      process.execPath,
      ["--conditions=development", "--import", "tsx", rotateScript],
      {
        env: {
          ...process.env,
          DATABASE_URL: db.url,
          IDENTITY_KEY_ENCRYPTION_KEY: kek,
          LOG_LEVEL: "silent",
        },
      },
    );
    assert.equal(stderr, "");
    const sql = createPostgres({
      url: db.url,
      service: "identity",
      logger: createLogger({ service: "t", level: "silent" }),
      registry: new Registry(),
    });
    try {
      const rows = await sql<{ kid: string; active: boolean }[]>`
        select kid, active from signing_keys where retired_at is null`;
      assert.equal(rows.length, 2);
      assert.ok(rows.some((r) => !r.active && r.kid === before.keys[0]?.kid));
    } finally {
      await sql.end({ timeout: 1 });
    }
    const login = await rpc("Login", { email: ADMIN_EMAIL, password: ADMIN_PASSWORD });
    // The running replica picks the new key up within its key cache lifetime; either key
    // it signs with must be published.
    const rpcJwks = await rpc("GetJwks", {});
    const kids = (rpcJwks.body.keys as { kid: string }[]).map((k) => k.kid);
    assert.ok(kids.includes(String(decodeProtectedHeader(String(login.body.accessToken)).kid)));
    assert.ok(before.keys.every((k) => kids.includes(k.kid)));
  });
});
