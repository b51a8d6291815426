/**
 * A stand-in for identity's signing key, for edge tests that need no real identity: its
 * JWKS is served over HTTP at /.well-known/jwks.json, where Envoy's jwt_authn fetches it
 * (the edge's `identity_http` upstream points here), and the same key verifies tokens in
 * the services behind the edge.
 */
import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { TokenVerifier } from "@meshmart/kit";
import { createTestIssuer } from "@meshmart/kit/testing";

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

/** The kit's test issuer, its JWKS served on a free loopback port. */
export async function startJwksIssuer(): Promise<JwksIssuer> {
  const issuer = await createTestIssuer();
  const jwks = JSON.stringify(issuer.jwks);
  const server: Server = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" }).end(jwks);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return {
    port,
    jwksUrl: `http://127.0.0.1:${port}/.well-known/jwks.json`,
    verifier: issuer.verifier,
    token: (claims = {}) => issuer.token(claims),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
