/**
 * Micro-benchmark of the kit's token verifier: one token verified in a loop, with the
 * verified-token cache off and on. Not a test (no timing assertions belong in tests):
 *
 *   node --conditions=development --import tsx services/kit/test/bench-token-verify.ts
 */
import { createLocalJWKSet, exportJWK, generateKeyPair, SignJWT } from "jose";
import { createJwtVerifier } from "../src/interceptors/auth.js";

const { privateKey, publicKey } = await generateKeyPair("ES256");
const jwk = { ...(await exportJWK(publicKey)), kid: "bench", alg: "ES256", use: "sig" };
const token = await new SignJWT({ email: "ann@example.com", roles: ["customer"] })
  .setProtectedHeader({ alg: "ES256", kid: "bench" })
  .setSubject("user-1")
  .setIssuer("meshmart-identity")
  .setAudience("meshmart")
  .setIssuedAt()
  .setExpirationTime("5m")
  .sign(privateKey);

async function run(label: string, cacheSize: number, calls: number): Promise<void> {
  const verify = createJwtVerifier({
    keys: createLocalJWKSet({ keys: [jwk] }),
    issuer: "meshmart-identity",
    audience: "meshmart",
    cacheSize,
  });
  for (let i = 0; i < 500; i++) await verify(token); // warm up the JIT and the key import
  const started = performance.now();
  for (let i = 0; i < calls; i++) await verify(token);
  const us = ((performance.now() - started) * 1000) / calls;
  process.stdout.write(`${label}: ${us.toFixed(2)} µs per call (${calls} calls)\n`);
}

for (let round = 0; round < 3; round++) {
  await run("uncached (cacheSize 0)", 0, 5_000);
  await run("cached (default size)", 10_000, 100_000);
}
