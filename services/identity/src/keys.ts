import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import {
  calculateJwkThumbprint,
  exportJWK,
  generateKeyPair,
  importJWK,
  type JWK,
  type JWTVerifyGetKey,
} from "jose";
import type { IdentityStore, SigningKeyRow } from "./store.js";

/** A key as jose imports it (CryptoKey is not a global type under this tsconfig). */
export type ImportedKey = Awaited<ReturnType<typeof importJWK>>;

/** A public key as the JWKS publishes it. */
export interface PublicJwk {
  kty: string;
  crv: string;
  x: string;
  y: string;
  kid: string;
  alg: string;
  use: string;
}

/** The active signing key, decrypted. */
export interface SigningKey {
  kid: string;
  privateKey: ImportedKey;
}

/** Identity's signing keys, backed by the store, with a short in-process cache. */
export interface KeyRing {
  /** Creates the first key unless an active one exists (safe across replicas). */
  ensureActiveKey(): Promise<void>;
  /** New active key; retires keys rotated out more than `retireAfterS` ago. */
  rotate(retireAfterS: number): Promise<{ kid: string; retired: string[] }>;
  signingKey(): Promise<SigningKey>;
  /** Published public keys: the active one and those not yet retired. */
  jwks(): Promise<PublicJwk[]>;
  /** For jose's jwtVerify: the published key named by the token's kid. */
  getKey: JWTVerifyGetKey;
}

const IV_BYTES = 12;
const TAG_BYTES = 16;

/** AES-256-GCM with the kid as associated data: a ciphertext moved to another row fails. */
export function encryptPrivateKey(plaintext: string, kid: string, kek: Buffer): Buffer {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv("aes-256-gcm", kek, iv);
  cipher.setAAD(Buffer.from(kid, "utf8"));
  const body = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
  return Buffer.concat([iv, cipher.getAuthTag(), body]);
}

export function decryptPrivateKey(sealed: Buffer, kid: string, kek: Buffer): string {
  const decipher = createDecipheriv("aes-256-gcm", kek, sealed.subarray(0, IV_BYTES));
  decipher.setAAD(Buffer.from(kid, "utf8"));
  decipher.setAuthTag(sealed.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
  return Buffer.concat([
    decipher.update(sealed.subarray(IV_BYTES + TAG_BYTES)),
    decipher.final(),
  ]).toString("utf8");
}

/** A fresh ES256 key, as the row to store (private part sealed). */
export async function newSigningKeyRow(
  kek: Buffer,
): Promise<Omit<SigningKeyRow, "active" | "created_at">> {
  const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
  const pub = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(pub);
  const priv = await exportJWK(privateKey);
  const public_jwk = {
    kty: String(pub.kty),
    crv: String(pub.crv),
    x: String(pub.x),
    y: String(pub.y),
    kid,
    alg: "ES256",
    use: "sig",
  };
  return {
    kid,
    public_jwk,
    private_key_enc: encryptPrivateKey(JSON.stringify(priv), kid, kek),
  };
}

/** How long a replica trusts its cached view of the keys before asking the database again. */
const CACHE_MS = 30_000;
/** Least time between reloads forced by an unknown kid (bounds load from forged tokens). */
const MIN_RELOAD_MS = 1_000;

export function createKeyRing(options: { store: IdentityStore; kek: Buffer }): KeyRing {
  const { store, kek } = options;
  let active: { key: SigningKey; loadedAt: number } | undefined;
  let published: { keys: PublicJwk[]; loadedAt: number } | undefined;
  const verifyKeys = new Map<string, ImportedKey>();

  async function loadPublished(): Promise<PublicJwk[]> {
    const rows = await store.publishedKeys();
    const keys = rows.map((r) => toPublicJwk(r.public_jwk));
    published = { keys, loadedAt: Date.now() };
    return keys;
  }

  async function jwks(): Promise<PublicJwk[]> {
    if (published !== undefined && Date.now() - published.loadedAt < CACHE_MS) {
      return published.keys;
    }
    return loadPublished();
  }

  return {
    async ensureActiveKey() {
      if ((await store.activeKey()) !== undefined) return;
      await store.createKeyIfNone(await newSigningKeyRow(kek));
    },

    async rotate(retireAfterS) {
      const row = await newSigningKeyRow(kek);
      const retired = await store.rotateKey(row, retireAfterS);
      active = undefined;
      published = undefined;
      return { kid: row.kid, retired };
    },

    async signingKey() {
      if (active !== undefined && Date.now() - active.loadedAt < CACHE_MS) return active.key;
      const row = await store.activeKey();
      if (row === undefined) throw new Error("no active signing key");
      const jwk = JSON.parse(decryptPrivateKey(row.private_key_enc, row.kid, kek)) as JWK;
      const privateKey = await importJWK(jwk, "ES256");
      const key = { kid: row.kid, privateKey };
      active = { key, loadedAt: Date.now() };
      return key;
    },

    jwks,

    async getKey(header) {
      const kid = header.kid;
      if (kid === undefined || header.alg !== "ES256") throw new Error("unsupported token header");
      let jwk = (await jwks()).find((k) => k.kid === kid);
      if (
        jwk === undefined &&
        (published === undefined || Date.now() - published.loadedAt >= MIN_RELOAD_MS)
      ) {
        jwk = (await loadPublished()).find((k) => k.kid === kid);
      }
      if (jwk === undefined) throw new Error("unknown key id");
      let key = verifyKeys.get(kid);
      if (key === undefined) {
        key = await importJWK({ ...jwk }, "ES256");
        verifyKeys.set(kid, key);
      }
      return key;
    },
  };
}

function toPublicJwk(stored: Record<string, string>): PublicJwk {
  return {
    kty: stored.kty ?? "",
    crv: stored.crv ?? "",
    x: stored.x ?? "",
    y: stored.y ?? "",
    kid: stored.kid ?? "",
    alg: stored.alg ?? "ES256",
    use: stored.use ?? "sig",
  };
}
