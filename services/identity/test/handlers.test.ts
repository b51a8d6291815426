import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { Code } from "@connectrpc/connect";
import { createLogger, createRedis } from "@meshmart/kit";
import { Role } from "@meshmart/kit/gen/meshmart/identity/v1/identity_pb.js";
import { createLogSink, testAudience, testIssuerName } from "@meshmart/kit/testing";
import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from "jose";
import { bootstrapAdmin } from "../src/bootstrap.js";
import { decryptPrivateKey } from "../src/keys.js";
import { createLoginThrottle } from "../src/throttle.js";
import { createTokenIssuer } from "../src/tokens.js";
import {
  ACCESS_TTL_S,
  bearer,
  createIdentityFixture,
  type IdentityFixture,
  rejection,
  violationsOf,
} from "./support/identity-fixture.js";

const PASSWORD = "correct horse battery staple";
/** Every secret a test handed over or received; none may appear in any log. */
const secrets = new Set<string>([PASSWORD]);

describe("identity handlers", () => {
  let f: IdentityFixture;
  before(async () => {
    f = await createIdentityFixture("identity_handlers");
  });
  after(async () => {
    await f?.close();
  });

  const email = () => `user-${randomUUID()}@example.com`;
  async function signUpAndLogin(address = email(), headers: Record<string, string> = {}) {
    await f.client.signUp({ email: address, password: PASSWORD, displayName: "Shopper" });
    const res = await f.client.login({ email: address, password: PASSWORD }, { headers });
    secrets.add(res.accessToken);
    secrets.add(res.refreshToken);
    return res;
  }

  test("SignUp creates a customer with a lowercased email", async () => {
    const address = `Mixed.${randomUUID()}@Example.COM`;
    const { user } = await f.client.signUp({
      email: address,
      password: PASSWORD,
      displayName: "M",
    });
    assert.equal(user?.email, address.toLowerCase());
    assert.deepEqual(user?.roles, [Role.CUSTOMER]);
    const [row] = await f.sql<
      { password_hash: string }[]
    >`select password_hash from users where id = ${user?.id ?? ""}`;
    assert.match(row?.password_hash ?? "", /^scrypt\$32768\$8\$1\$/);
  });

  test("SignUp with a registered email in another case is ALREADY_EXISTS and creates nothing", async () => {
    const address = email();
    await f.client.signUp({ email: address, password: PASSWORD, displayName: "A" });
    const err = await rejection(
      f.client.signUp({ email: address.toUpperCase(), password: `${PASSWORD}!`, displayName: "B" }),
    );
    assert.equal(err.code, Code.AlreadyExists);
    const [n] = await f.sql<
      { n: bigint }[]
    >`select count(*) as n from users where lower(email) = ${address}`;
    assert.equal(n?.n, 1n);
  });

  test("SignUp rejects a weak password with field violations", async () => {
    const short = await rejection(
      f.client.signUp({ email: email(), password: "short", displayName: "A" }),
    );
    assert.deepEqual(violationsOf(short), [{ path: "password", rule: "string.min_len" }]);
    const address = email();
    const same = await rejection(
      f.client.signUp({ email: address, password: address, displayName: "A" }),
    );
    assert.deepEqual(violationsOf(same), [{ path: "password", rule: "password.not_email" }]);
  });

  test("Login: good credentials get tokens; a wrong password and an unknown email get the same UNAUTHENTICATED", async () => {
    const address = email();
    const res = await signUpAndLogin(address);
    assert.equal(res.tokenType, "Bearer");
    assert.equal(res.expiresIn, BigInt(ACCESS_TTL_S));
    assert.equal(res.user?.email, address);
    const wrong = await rejection(f.client.login({ email: address, password: "wrong password!!" }));
    const unknown = await rejection(f.client.login({ email: email(), password: PASSWORD }));
    assert.equal(wrong.code, Code.Unauthenticated);
    assert.equal(unknown.code, Code.Unauthenticated);
    assert.equal(wrong.rawMessage, unknown.rawMessage);
  });

  test("Login throttling is per account and per client, with a retry-after hint", async () => {
    const victim = email();
    const bystander = email();
    await f.client.signUp({ email: victim, password: PASSWORD, displayName: "V" });
    await f.client.signUp({ email: bystander, password: PASSWORD, displayName: "B" });
    const fromA = { headers: { "x-forwarded-for": "203.0.113.1, 10.0.0.1" } };
    for (let i = 0; i < 3; i++) {
      const err = await rejection(
        f.client.login({ email: victim, password: "wrong password!!" }, fromA),
      );
      assert.equal(err.code, Code.Unauthenticated);
    }
    // The account is locked, even with the right password and from another client.
    const locked = await rejection(
      f.client.login(
        { email: victim, password: PASSWORD },
        { headers: { "x-forwarded-for": "203.0.113.2" } },
      ),
    );
    assert.equal(locked.code, Code.ResourceExhausted);
    assert.match(locked.rawMessage, /retry after \d+ seconds/);
    // Another account from the same client is not.
    await f.client.login({ email: bystander, password: PASSWORD }, fromA);
    // Per client: 5 failures over different accounts lock the client out.
    const fromC = { headers: { "x-forwarded-for": "198.51.100.7" } };
    for (let i = 0; i < 5; i++) {
      await rejection(f.client.login({ email: email(), password: "wrong password!!" }, fromC));
    }
    const clientLocked = await rejection(
      f.client.login({ email: bystander, password: PASSWORD }, fromC),
    );
    assert.equal(clientLocked.code, Code.ResourceExhausted);
  });

  test("RefreshToken rotates; reusing a rotated token revokes the whole family", async () => {
    const first = await signUpAndLogin();
    const second = await f.client.refreshToken({ refreshToken: first.refreshToken });
    secrets.add(second.refreshToken);
    assert.notEqual(second.refreshToken, first.refreshToken);
    await f.client.getMe({}, bearer(second.accessToken));
    const third = await f.client.refreshToken({ refreshToken: second.refreshToken });
    secrets.add(third.refreshToken);
    // Theft: the first token comes back.
    const reuse = await rejection(f.client.refreshToken({ refreshToken: first.refreshToken }));
    assert.equal(reuse.code, Code.Unauthenticated);
    const newest = await rejection(f.client.refreshToken({ refreshToken: third.refreshToken }));
    assert.equal(newest.code, Code.Unauthenticated);
    const unknown = await rejection(f.client.refreshToken({ refreshToken: "not-a-token" }));
    assert.equal(unknown.code, Code.Unauthenticated);
  });

  test("refresh tokens are stored only as hashes", async () => {
    const res = await signUpAndLogin();
    const rows = await f.sql<{ token_hash: Buffer }[]>`select token_hash from refresh_tokens`;
    assert.ok(rows.length > 0);
    for (const r of rows) assert.equal(r.token_hash.length, 32);
    assert.ok(!rows.some((r) => r.token_hash.toString("base64url") === res.refreshToken));
  });

  test("Logout revokes the session and is idempotent", async () => {
    const res = await signUpAndLogin();
    await f.client.logout({ refreshToken: res.refreshToken });
    await f.client.logout({ refreshToken: res.refreshToken });
    await f.client.logout({ refreshToken: "never-issued" });
    const err = await rejection(f.client.refreshToken({ refreshToken: res.refreshToken }));
    assert.equal(err.code, Code.Unauthenticated);
  });

  test("GetMe needs a valid token", async () => {
    const res = await signUpAndLogin();
    const me = await f.client.getMe({}, bearer(res.accessToken));
    assert.equal(me.user?.id, res.user?.id);
    assert.equal((await rejection(f.client.getMe({}))).code, Code.Unauthenticated);
    assert.equal(
      (await rejection(f.client.getMe({}, bearer(`${res.accessToken}x`)))).code,
      Code.Unauthenticated,
    );
  });

  test("an expired access token is rejected", async () => {
    const res = await signUpAndLogin();
    const past = createTokenIssuer({
      keys: f.keys,
      issuer: testIssuerName,
      audience: testAudience,
      accessTtlS: 60,
      now: () => Date.now() - 3_600_000,
    });
    const { token: expired } = await past.accessToken({
      id: res.user?.id ?? "",
      email: "x@example.com",
      roles: ["customer"],
    });
    assert.equal((await rejection(f.client.getMe({}, bearer(expired)))).code, Code.Unauthenticated);
  });

  test("access token claims and header", async () => {
    const res = await signUpAndLogin();
    const header = decodeProtectedHeader(res.accessToken);
    const claims = decodeJwt(res.accessToken);
    const { keys } = await f.client.getJwks({});
    assert.equal(header.alg, "ES256");
    assert.ok(keys.some((k) => k.kid === header.kid));
    assert.equal(claims.iss, "meshmart-identity");
    assert.equal(claims.aud, "meshmart");
    assert.equal(claims.sub, res.user?.id);
    assert.equal(claims.email, res.user?.email);
    assert.deepEqual(claims.roles, ["customer"]);
    assert.equal((claims.exp ?? 0) - (claims.iat ?? 0), ACCESS_TTL_S);
    assert.equal(typeof claims.jti, "string");
    const jwks = createLocalJWKSet({ keys: keys.map((k) => ({ ...k })) });
    await jwtVerify(res.accessToken, jwks, { issuer: "meshmart-identity", audience: "meshmart" });
  });

  test("GrantRole: admin only, idempotent, NOT_FOUND for unknown users, role in next token", async () => {
    const adminEmail = email();
    const adminPassword = "admin password 123";
    secrets.add(adminPassword);
    await bootstrapAdmin(
      f.store,
      createLogger({ service: "t", level: "silent" }),
      adminEmail,
      adminPassword,
    );
    const admin = await f.client.login({ email: adminEmail, password: adminPassword });
    secrets.add(admin.accessToken);
    secrets.add(admin.refreshToken);
    assert.deepEqual(decodeJwt(admin.accessToken).roles, ["customer", "admin"]);
    const target = await signUpAndLogin();
    const userId = target.user?.id ?? "";
    const denied = await rejection(
      f.client.grantRole({ userId, role: Role.ADMIN }, bearer(target.accessToken)),
    );
    assert.equal(denied.code, Code.PermissionDenied);
    const anonymous = await rejection(f.client.grantRole({ userId, role: Role.ADMIN }));
    assert.equal(anonymous.code, Code.Unauthenticated);
    const granted = await f.client.grantRole(
      { userId, role: Role.ADMIN },
      bearer(admin.accessToken),
    );
    assert.deepEqual(granted.user?.roles, [Role.CUSTOMER, Role.ADMIN]);
    const again = await f.client.grantRole({ userId, role: Role.ADMIN }, bearer(admin.accessToken));
    assert.deepEqual(again.user?.roles, [Role.CUSTOMER, Role.ADMIN]);
    const missing = await rejection(
      f.client.grantRole({ userId: randomUUID(), role: Role.ADMIN }, bearer(admin.accessToken)),
    );
    assert.equal(missing.code, Code.NotFound);
    const next = await f.client.refreshToken({ refreshToken: target.refreshToken });
    secrets.add(next.refreshToken);
    assert.deepEqual(decodeJwt(next.accessToken).roles, ["customer", "admin"]);
  });

  test("the private key is encrypted at rest", async () => {
    const rows = await f.sql<
      { kid: string; private_key_enc: Buffer }[]
    >`select kid, private_key_enc from signing_keys`;
    assert.ok(rows.length > 0);
    for (const row of rows) {
      const jwk = JSON.parse(decryptPrivateKey(row.private_key_enc, row.kid, f.kek)) as {
        d: string;
      };
      assert.equal(typeof jwk.d, "string");
      assert.ok(!row.private_key_enc.includes(Buffer.from(jwk.d)));
      assert.ok(!row.private_key_enc.includes(Buffer.from('"d"')));
    }
  });

  test("key rotation keeps old tokens verifiable, JWKS lists both, later rotation retires", async () => {
    const before = await signUpAndLogin();
    const oldKid = decodeProtectedHeader(before.accessToken).kid;
    const { kid: newKid } = await f.keys.rotate(ACCESS_TTL_S);
    const { keys } = await f.client.getJwks({});
    assert.deepEqual(new Set(keys.map((k) => k.kid)), new Set([oldKid, newKid]));
    await f.client.getMe({}, bearer(before.accessToken));
    const fresh = await f.client.login({ email: before.user?.email ?? "", password: PASSWORD });
    secrets.add(fresh.accessToken);
    secrets.add(fresh.refreshToken);
    assert.equal(decodeProtectedHeader(fresh.accessToken).kid, newKid);
    // Pretend the old key was rotated out longer ago than tokens live: the next rotation retires it.
    await f.sql`update signing_keys set deactivated_at = now() - interval '1 hour' where kid = ${oldKid ?? ""}`;
    const third = await f.keys.rotate(ACCESS_TTL_S);
    assert.deepEqual(third.retired, [oldKid]);
    const after = await f.client.getJwks({});
    assert.deepEqual(new Set(after.keys.map((k) => k.kid)), new Set([newKid, third.kid]));
    assert.equal(
      (await rejection(f.client.getMe({}, bearer(before.accessToken)))).code,
      Code.Unauthenticated,
    );
    await f.client.getMe({}, bearer(fresh.accessToken));
  });

  test("throttling fails open (and says so) when Redis is down", async () => {
    const logs = createLogSink();
    const logger = createLogger({ service: "t", level: "debug", destination: logs.stream });
    const redis = createRedis({ url: "redis://127.0.0.1:1", logger });
    try {
      const throttle = createLoginThrottle({
        redis,
        prefix: "unused:",
        limits: { perAccount: 1, perClient: 1, windowS: 60 },
        logger,
      });
      const attempt = { email: "a@example.com", client: "192.0.2.1" };
      await throttle.recordFailure(attempt);
      await throttle.recordFailure(attempt);
      assert.equal(await throttle.blockedFor(attempt), undefined);
      assert.match(logs.text(), /login throttle unavailable/);
    } finally {
      redis.disconnect();
    }
  });

  test("no password or token appears in any log", () => {
    const text = f.logs.text() + f.rpcLogs.text();
    assert.ok(text.length > 0);
    for (const secret of secrets) assert.ok(!text.includes(secret), "a secret was logged");
  });
});
