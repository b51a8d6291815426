import assert from "node:assert/strict";
import { test } from "node:test";
import { createLocalJWKSet, exportJWK, generateKeyPair, type JWTVerifyGetKey, SignJWT } from "jose";
import { createJwtVerifier } from "../src/interceptors/auth.js";

const issuer = "meshmart-identity";
const audience = "meshmart";

interface Signer {
  kid: string;
  jwk: Record<string, unknown>;
  sign(claims?: { sub?: string; exp?: number }): Promise<string>;
}

async function signer(kid: string): Promise<Signer> {
  const { privateKey, publicKey } = await generateKeyPair("ES256");
  const jwk = { ...(await exportJWK(publicKey)), kid, alg: "ES256", use: "sig" };
  return {
    kid,
    jwk,
    sign: (claims = {}) =>
      new SignJWT({ email: "ann@example.com", roles: ["customer"] })
        .setProtectedHeader({ alg: "ES256", kid })
        .setSubject(claims.sub ?? "user-1")
        .setIssuer(issuer)
        .setAudience(audience)
        .setIssuedAt()
        .setExpirationTime(claims.exp ?? Math.floor(Date.now() / 1000) + 300)
        .sign(privateKey),
  };
}

/**
 * A verifier over a JWKS the test can swap (as a refresh of identity's JWKS would), on a
 * clock the test moves, counting full verifications: only those hand the key getter a
 * real signature, a cache hit asks with an empty one.
 */
function harness(first: Signer, cacheSize?: number) {
  let jwks = createLocalJWKSet({ keys: [first.jwk] });
  let clock = Date.now();
  let full = 0;
  const keys: JWTVerifyGetKey = (header, input) => {
    if (input.signature !== "") full++;
    return jwks(header, input);
  };
  const verify = createJwtVerifier({
    keys,
    issuer,
    audience,
    now: () => clock,
    ...(cacheSize === undefined ? {} : { cacheSize }),
  });
  return {
    verify,
    fullVerifications: () => full,
    publish: (...signers: Signer[]) => {
      jwks = createLocalJWKSet({ keys: signers.map((s) => s.jwk) });
    },
    advance: (ms: number) => {
      clock += ms;
    },
  };
}

test("a repeated token is served from the cache with the same claims", async () => {
  const key = await signer("k1");
  const h = harness(key);
  const token = await key.sign({ sub: "user-7" });
  const first = await h.verify(token);
  const second = await h.verify(token);
  assert.equal(h.fullVerifications(), 1);
  assert.deepEqual(second, first);
  assert.equal(second.userId, "user-7");
  assert.deepEqual(second.roles, ["customer"]);
});

test("a cached token stops verifying at its exp", async () => {
  const key = await signer("k1");
  const h = harness(key);
  const exp = Math.floor(Date.now() / 1000) + 60;
  const token = await key.sign({ exp });
  await h.verify(token);
  h.advance(exp * 1000 - Date.now() - 1_000);
  await h.verify(token);
  assert.equal(h.fullVerifications(), 1, "still a hit a second before exp");
  h.advance(2_000);
  await assert.rejects(h.verify(token), { code: "ERR_JWT_EXPIRED" });
});

test("a cached token whose key was rotated away stops verifying", async () => {
  const old = await signer("k1");
  const next = await signer("k2");
  const h = harness(old);
  const token = await old.sign();
  await h.verify(token);
  h.publish(next);
  await assert.rejects(h.verify(token));
  // Rotating back in a *different* key under the same kid must not revive the entry.
  const impostor = { ...next, kid: "k1", jwk: { ...next.jwk, kid: "k1" } };
  h.publish(impostor);
  await assert.rejects(h.verify(token));
});

test("a cached token survives a refresh that keeps its key", async () => {
  const old = await signer("k1");
  const next = await signer("k2");
  const h = harness(old);
  const token = await old.sign();
  await h.verify(token);
  h.publish(old, next);
  const caller = await h.verify(token);
  assert.equal(caller.userId, "user-1");
});

test("the cache never grows past its bound and evicts the least recently used", async () => {
  const key = await signer("k1");
  const h = harness(key, 3);
  const tokens = await Promise.all(["a", "b", "c", "d", "e"].map((sub) => key.sign({ sub })));
  for (const token of tokens) await h.verify(token);
  assert.equal(h.fullVerifications(), 5);
  // c, d, e are the three held; touching c makes d the least recently used.
  for (const token of [tokens[2], tokens[3], tokens[4], tokens[2]]) await h.verify(String(token));
  assert.equal(h.fullVerifications(), 5, "the newest three are hits");
  await h.verify(String(tokens[0]));
  assert.equal(h.fullVerifications(), 6, "the evicted first token is verified again");
  // a is in, so d (least recently used) went out; c and e stayed.
  await h.verify(String(tokens[2]));
  await h.verify(String(tokens[4]));
  assert.equal(h.fullVerifications(), 6);
  await h.verify(String(tokens[3]));
  assert.equal(h.fullVerifications(), 7);
});

test("a tampered token never hits the cache", async () => {
  const key = await signer("k1");
  const h = harness(key);
  const token = await key.sign();
  await h.verify(token);
  const [head, body, sig] = token.split(".") as [string, string, string];
  const flip = (s: string, at: number) =>
    s.slice(0, at) + (s[at] === "A" ? "B" : "A") + s.slice(at + 1);
  for (const tampered of [
    `${head}.${body}.${flip(sig, 10)}`,
    `${head}.${flip(body, 12)}.${sig}`,
    `${token}x`,
  ]) {
    const before = h.fullVerifications();
    await assert.rejects(h.verify(tampered));
    assert.ok(h.fullVerifications() <= before + 1);
  }
  // Failures are not remembered, and the genuine token is still a hit.
  const before = h.fullVerifications();
  await h.verify(token);
  assert.equal(h.fullVerifications(), before);
});

test("cacheSize 0 verifies every call", async () => {
  const key = await signer("k1");
  const h = harness(key, 0);
  const token = await key.sign();
  await h.verify(token);
  await h.verify(token);
  assert.equal(h.fullVerifications(), 2);
});
