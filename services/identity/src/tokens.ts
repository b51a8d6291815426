import { createHash, randomBytes, randomUUID } from "node:crypto";
import { SignJWT } from "jose";
import type { KeyRing } from "./keys.js";

/** An access token and when it expires. */
export interface AccessToken {
  token: string;
  expiresAt: Date;
}

/** Signs identity's access tokens (ES256, with the active key's kid). */
export interface TokenIssuer {
  readonly accessTtlS: number;
  accessToken(user: { id: string; email: string; roles: readonly string[] }): Promise<AccessToken>;
}

export function createTokenIssuer(options: {
  keys: KeyRing;
  issuer: string;
  audience: string;
  accessTtlS: number;
  /** Clock (tests move it to mint expired tokens). */
  now?: () => number;
}): TokenIssuer {
  const now = options.now ?? Date.now;
  return {
    accessTtlS: options.accessTtlS,
    async accessToken(user) {
      const { kid, privateKey } = await options.keys.signingKey();
      const iat = Math.floor(now() / 1000);
      const exp = iat + options.accessTtlS;
      const token = await new SignJWT({ email: user.email, roles: [...user.roles] })
        .setProtectedHeader({ alg: "ES256", kid, typ: "JWT" })
        .setSubject(user.id)
        .setIssuer(options.issuer)
        .setAudience(options.audience)
        .setIssuedAt(iat)
        .setExpirationTime(exp)
        .setJti(randomUUID())
        .sign(privateKey);
      return { token, expiresAt: new Date(exp * 1000) };
    },
  };
}

/** A new opaque refresh token: 32 random bytes, base64url. */
export function newRefreshToken(): string {
  return randomBytes(32).toString("base64url");
}

/** What is stored of a refresh token: its SHA-256. */
export function hashRefreshToken(token: string): Buffer {
  return createHash("sha256").update(token, "utf8").digest();
}
