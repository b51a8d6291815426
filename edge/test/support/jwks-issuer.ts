/**
 * A stand-in for identity's signing key, for edge tests that need no real identity: its
 * JWKS is served over HTTP at /.well-known/jwks.json, where Envoy's jwt_authn fetches it
 * (the edge's `identity_http` upstream points here), and the same key verifies tokens in
 * the services behind the edge.
 */
import { randomUUID } from "node:crypto";
import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createJwtVerifier, type TokenVerifier } from "@meshmart/kit";
import { createLocalJWKSet, exportJWK, generateKeyPair, SignJWT } from "jose";

/** A served ES256 key, the issuer and audience identity uses. */
export interface JwksIssuer {
  /** The JWKS server's port: give it to the edge as identity's Connect (`http`) port. */
  readonly port: number;
  /** http://127.0.0.1:port/.well-known/jwks.json */
  readonly jwksUrl: string;
  /** Trusts this key, in process, for services started by the same test. */
  readonly verifier: TokenVerifier;
  /** An access token shaped like identity's; `sub` defaults to a fresh uuid. */
  token(claims?: { sub?: string; roles?: string[]; expiresIn?: string }): Promise<string>;
  close(): Promise<void>;
}

const ISSUER = "meshmart-identity";
const AUDIENCE = "meshmart";

/** Starts the JWKS server on a free loopback port. */
export async function startJwksIssuer(): Promise<JwksIssuer> {
  const { privateKey, publicKey } = await generateKeyPair("ES256");
  const kid = `k-${randomUUID()}`;
  const jwk = { ...(await exportJWK(publicKey)), kid, alg: "ES256", use: "sig" };
  const jwks = JSON.stringify({ keys: [jwk] });
  const server: Server = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" }).end(jwks);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return {
    port,
    jwksUrl: `http://127.0.0.1:${port}/.well-known/jwks.json`,
    verifier: createJwtVerifier({
      keys: createLocalJWKSet({ keys: [jwk] }),
      issuer: ISSUER,
      audience: AUDIENCE,
    }),
    token: (claims = {}) =>
      new SignJWT({ email: "edge-test@example.com", roles: claims.roles ?? ["customer"] })
        .setProtectedHeader({ alg: "ES256", kid })
        .setSubject(claims.sub ?? randomUUID())
        .setIssuer(ISSUER)
        .setAudience(AUDIENCE)
        .setIssuedAt()
        .setJti(randomUUID())
        .setExpirationTime(claims.expiresIn ?? "5m")
        .sign(privateKey),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
