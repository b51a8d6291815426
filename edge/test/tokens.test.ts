import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { startIdentity } from "@meshmart/identity";
import { identityConfigSchema } from "@meshmart/identity/config";
import { loadConfig, type ServiceHost } from "@meshmart/kit";
import {
  createLogSink,
  createTestDatabase,
  openTestEvents,
  type TestDatabase,
  type TestEvents,
  testRedisUrl,
  uniqueName,
} from "@meshmart/kit/testing";
import { generateKeyPair, SignJWT } from "jose";
import { edgeConfigSchema, type RunningEdge, startEdge } from "../src/server.js";

// Tokens through the edge against the real identity service: only a token identity signed,
// for this issuer and audience, unexpired and untampered, gets through; a reused refresh
// token ends its whole session.
describe("tokens through the edge", { timeout: 120_000 }, () => {
  let db: TestDatabase;
  const hosts: ServiceHost[] = [];
  let edge: RunningEdge;
  const kek = randomBytes(32).toString("base64");
  let redisUrl: string;

  /** An identity on the shared database; `env` changes issuer, audience or token lifetime. */
  async function identity(env: Record<string, string> = {}): Promise<ServiceHost> {
    const host = await startIdentity(
      loadConfig(identityConfigSchema, {
        SERVICE_NAME: "identity",
        GRPC_PORT: "0",
        HTTP_PORT: "0",
        ADMIN_PORT: "0",
        LOG_LEVEL: "warn",
        DATABASE_URL: db.url,
        REDIS_URL: redisUrl,
        ...events.env,
        IDENTITY_REDIS_PREFIX: `${uniqueName("edge_tokens")}:`,
        IDENTITY_KEY_ENCRYPTION_KEY: kek,
        ...env,
      }),
      { logDestination: createLogSink().stream },
    );
    hosts.push(host);
    return host;
  }

  const post = (path: string, body: unknown, token?: string) =>
    fetch(`${edge.url}${path}`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
      },
      body: JSON.stringify(body),
    });
  const me = (token: string) =>
    fetch(`${edge.url}/v1/me`, { headers: { authorization: `Bearer ${token}` } });

  async function login(email: string, base = edge.url) {
    const res = await fetch(`${base}/v1/sessions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ email, password: "correct horse battery" }),
    });
    assert.equal(res.status, 200);
    return (await res.json()) as { accessToken: string; refreshToken: string };
  }

  async function assertRejected(res: Response, what: string) {
    assert.equal(res.status, 401, what);
    assert.match(res.headers.get("www-authenticate") ?? "", /^Bearer/, what);
    const body = (await res.json()) as { code: number; message: string };
    assert.equal(body.code, 16, what);
  }

  let events: TestEvents;
  before(async () => {
    events = await openTestEvents("edge_tokens");
    [db, redisUrl] = await Promise.all([createTestDatabase("edge_tokens"), testRedisUrl()]);
    const main = await identity();
    edge = await startEdge(
      edgeConfigSchema.parse({
        EDGE_PORT: "0",
        IDENTITY_GRPC_ADDR: main.grpcTarget,
        AUTH_JWKS_URL: `${main.httpUrl}/.well-known/jwks.json`,
      }),
      { logDestination: createLogSink().stream },
    );
    const signup = await post("/v1/users", {
      email: "tess@example.com",
      password: "correct horse battery",
      displayName: "Tess",
    });
    assert.equal(signup.status, 200);
  });

  after(async () => {
    await edge?.close();
    for (const host of hosts) await host.close();
    await db?.drop();
    await events?.close();
  });

  test("signup → login → GET /v1/me", async () => {
    const { accessToken } = await login("tess@example.com");
    const res = await me(accessToken);
    assert.equal(res.status, 200);
    const body = (await res.json()) as { user: { email: string } };
    assert.equal(body.user.email, "tess@example.com");
  });

  test("an expired token is refused", async () => {
    const shortLived = await identity({ ACCESS_TOKEN_TTL_S: "1" });
    const { accessToken } = await login("tess@example.com", await restOf(shortLived));
    await new Promise((r) => setTimeout(r, 2_100));
    await assertRejected(await me(accessToken), "expired");
  });

  test("a token for another issuer or audience is refused, though identity's key signed it", async () => {
    for (const env of [{ AUTH_ISSUER: "someone-else" }, { AUTH_AUDIENCE: "another-api" }]) {
      const other = await identity(env);
      const { accessToken } = await login("tess@example.com", await restOf(other));
      await assertRejected(await me(accessToken), JSON.stringify(env));
    }
  });

  test("a token signed by an unknown key is refused", async () => {
    const { privateKey } = await generateKeyPair("ES256");
    const forged = await new SignJWT({ email: "tess@example.com", roles: ["admin"] })
      .setProtectedHeader({ alg: "ES256", kid: "not-a-key-of-identity" })
      .setSubject(randomUUID())
      .setIssuer("meshmart-identity")
      .setAudience("meshmart")
      .setIssuedAt()
      .setExpirationTime("5m")
      .sign(privateKey);
    await assertRejected(await me(forged), "unknown kid");
  });

  test("a tampered payload and alg:none are refused", async () => {
    const { accessToken } = await login("tess@example.com");
    const [header, payload, signature] = accessToken.split(".") as [string, string, string];
    const claims = JSON.parse(Buffer.from(payload, "base64url").toString()) as Record<
      string,
      unknown
    >;
    const elevated = Buffer.from(JSON.stringify({ ...claims, roles: ["admin"] })).toString(
      "base64url",
    );
    await assertRejected(await me(`${header}.${elevated}.${signature}`), "tampered");
    const none = Buffer.from(JSON.stringify({ alg: "none", typ: "JWT" })).toString("base64url");
    await assertRejected(await me(`${none}.${payload}.`), "alg none");
  });

  test("reusing a rotated refresh token is refused and revokes the session", async () => {
    const first = await login("tess@example.com");
    const rotated = await post("/v1/sessions:refresh", { refreshToken: first.refreshToken });
    assert.equal(rotated.status, 200);
    const second = (await rotated.json()) as { refreshToken: string };
    assert.notEqual(second.refreshToken, first.refreshToken);
    await assertRefused(await post("/v1/sessions:refresh", { refreshToken: first.refreshToken }));
    // The newest token of the family dies with it: the reuse may mean it was stolen.
    await assertRefused(await post("/v1/sessions:refresh", { refreshToken: second.refreshToken }));
  });

  async function assertRefused(res: Response) {
    assert.equal(res.status, 401);
    assert.equal(((await res.json()) as { code: number }).code, 16);
  }

  /** A second edge in front of `host`, so logins get that identity's tokens. */
  async function restOf(host: ServiceHost): Promise<string> {
    const other = await startEdge(
      edgeConfigSchema.parse({
        EDGE_PORT: "0",
        IDENTITY_GRPC_ADDR: host.grpcTarget,
        AUTH_JWKS_URL: `${host.httpUrl}/.well-known/jwks.json`,
      }),
      { logDestination: createLogSink().stream },
    );
    hosts.push({ ...host, close: () => other.close() });
    return other.url;
  }
});
