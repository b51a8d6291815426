import { randomUUID } from "node:crypto";
import { createLocalJWKSet, exportJWK, generateKeyPair, type JSONWebKeySet, SignJWT } from "jose";
import { createJwtVerifier, type TokenVerifier } from "../interceptors/auth.js";

/** A throwaway signing key standing in for identity's, with a verifier that trusts it. */
export interface TestIssuer {
  verifier: TokenVerifier;
  /** The public key as identity publishes its keys, for a JWKS endpoint (Envoy's jwt_authn). */
  jwks: JSONWebKeySet;
  /** Signs an access token shaped like identity's (ES256, iss, aud, sub, email, roles, jti). */
  token(claims: {
    sub?: string;
    email?: string;
    roles?: string[];
    expiresIn?: string;
  }): Promise<string>;
}

/** Issuer and audience the kit's defaults expect. */
export const testIssuerName = "meshmart-identity";
export const testAudience = "meshmart";

/** Creates a fresh ES256 key pair in memory; nothing touches disk or network. */
export async function createTestIssuer(): Promise<TestIssuer> {
  const { privateKey, publicKey } = await generateKeyPair("ES256");
  const jwk = { ...(await exportJWK(publicKey)), kid: "test-key", alg: "ES256", use: "sig" };
  const jwks: JSONWebKeySet = { keys: [jwk] };
  const verifier = createJwtVerifier({
    keys: createLocalJWKSet(jwks),
    issuer: testIssuerName,
    audience: testAudience,
  });
  return {
    verifier,
    jwks,
    token: (claims) =>
      new SignJWT({
        email: claims.email ?? "shopper@example.com",
        roles: claims.roles ?? ["customer"],
      })
        .setProtectedHeader({ alg: "ES256", kid: "test-key" })
        .setSubject(claims.sub ?? randomUUID())
        .setIssuer(testIssuerName)
        .setAudience(testAudience)
        .setIssuedAt()
        .setJti(randomUUID())
        .setExpirationTime(claims.expiresIn ?? "5m")
        .sign(privateKey),
  };
}
