import { type EventNames, newEvent, type Sql, writeEvents } from "@meshmart/kit";
import {
  UserRoleGrantedSchema,
  UserSignedUpSchema,
} from "@meshmart/kit/gen/meshmart/identity/v1/events_pb.js";
import { roleOf } from "./user-mapper.js";

/** A user as stored. */
export interface UserRow {
  id: string;
  email: string;
  display_name: string;
  password_hash: string;
  roles: string[];
  created_at: Date;
  updated_at: Date;
}

/** A signing key as stored (private part still encrypted). */
export interface SigningKeyRow {
  kid: string;
  public_jwk: Record<string, string>;
  private_key_enc: Buffer;
  active: boolean;
  created_at: Date;
}

/** A refresh token to store (hash only). */
export interface NewRefreshToken {
  hash: Buffer;
  familyId: string;
  userId: string;
  expiresAt: Date;
}

/** Outcome of exchanging a refresh token. */
export type RotateOutcome =
  | { kind: "rotated"; user: UserRow }
  | { kind: "reused" }
  | { kind: "invalid" };

const userColumns = "id, email, display_name, password_hash, roles, created_at, updated_at";
const keyColumns = "kid, public_jwk, private_key_enc, active, created_at";
/** Serializes key creation and rotation across replicas: "idkeys" in ASCII. */
const KEY_LOCK = 0x69646b657973n;

/** Every SQL statement identity runs. */
export interface IdentityStore {
  /** Inserts the user; undefined when the email (case-insensitively) is taken. */
  createUser(user: Omit<UserRow, "created_at" | "updated_at">): Promise<UserRow | undefined>;
  findUserByEmail(email: string): Promise<UserRow | undefined>;
  getUser(id: string): Promise<UserRow | undefined>;
  /**
   * Adds the role (no-op when held); undefined when no such user. `grantedBy` is the
   * admin's user id, empty for the bootstrap admin.
   */
  addRole(userId: string, role: string, grantedBy: string): Promise<UserRow | undefined>;
  insertRefreshToken(token: NewRefreshToken): Promise<void>;
  /**
   * Exchanges the token with `hash` for `next` (same family), atomically. A token already
   * rotated revokes its whole family ("reused"); unknown, expired or revoked is "invalid".
   */
  rotateRefreshToken(
    hash: Buffer,
    next: Omit<NewRefreshToken, "familyId" | "userId">,
  ): Promise<RotateOutcome>;
  /** Revokes the family of the token with `hash` (the session); nothing when unknown. */
  revokeRefreshFamily(hash: Buffer): Promise<void>;
  activeKey(): Promise<SigningKeyRow | undefined>;
  /** Keys not retired (the JWKS), newest first. */
  publishedKeys(): Promise<SigningKeyRow[]>;
  /** Inserts `key` as active unless an active key exists; returns whether it did. */
  createKeyIfNone(key: Omit<SigningKeyRow, "active" | "created_at">): Promise<boolean>;
  /**
   * Makes `key` the active key, deactivating the current one, and retires keys
   * deactivated more than `retireAfterS` seconds ago. Returns the retired kids.
   */
  rotateKey(
    key: Omit<SigningKeyRow, "active" | "created_at">,
    retireAfterS: number,
  ): Promise<string[]>;
}

/** The store over identity's own database. */
export function createIdentityStore(sql: Sql, names: EventNames): IdentityStore {
  return {
    async createUser(u) {
      return sql.begin(async (tx) => {
        const [row] = await tx<UserRow[]>`
          insert into users (id, email, display_name, password_hash, roles)
          values (${u.id}, ${u.email.toLowerCase()}, ${u.display_name}, ${u.password_hash}, ${u.roles})
          on conflict ((lower(email))) do nothing
          returning ${tx.unsafe(userColumns)}`;
        if (row === undefined) return undefined;
        await writeEvents(tx, names, [
          newEvent(UserSignedUpSchema, {
            userId: row.id,
            email: row.email,
            displayName: row.display_name,
          }),
        ]);
        return row;
      });
    },

    async findUserByEmail(email) {
      const rows = await sql<UserRow[]>`
        select ${sql.unsafe(userColumns)} from users where lower(email) = ${email.toLowerCase()}`;
      return rows[0];
    },

    async getUser(id) {
      const rows = await sql<UserRow[]>`
        select ${sql.unsafe(userColumns)} from users where id = ${id}`;
      return rows[0];
    },

    async addRole(userId, role, grantedBy) {
      return sql.begin(async (tx) => {
        const [granted] = await tx<UserRow[]>`
          update users set roles = array_append(roles, ${role}::text), updated_at = now()
          where id = ${userId} and not (${role}::text = any (roles))
          returning ${tx.unsafe(userColumns)}`;
        if (granted === undefined) {
          const [current] = await tx<UserRow[]>`
            select ${tx.unsafe(userColumns)} from users where id = ${userId}`;
          return current;
        }
        const apiRole = roleOf(role);
        if (apiRole !== undefined) {
          await writeEvents(tx, names, [
            newEvent(UserRoleGrantedSchema, {
              userId: granted.id,
              role: apiRole,
              grantedByUserId: grantedBy,
            }),
          ]);
        }
        return granted;
      });
    },

    async insertRefreshToken(t) {
      await sql`
        insert into refresh_tokens (token_hash, family_id, user_id, expires_at)
        values (${t.hash}, ${t.familyId}, ${t.userId}, ${t.expiresAt})`;
    },

    rotateRefreshToken(hash, next) {
      return sql.begin(async (tx): Promise<RotateOutcome> => {
        const [current] = await tx<
          {
            family_id: string;
            user_id: string;
            expired: boolean;
            rotated_at: Date | null;
            revoked_at: Date | null;
          }[]
        >`
          select family_id, user_id, expires_at <= now() as expired, rotated_at, revoked_at
          from refresh_tokens where token_hash = ${hash} for update`;
        if (current === undefined) return { kind: "invalid" };
        if (current.rotated_at !== null) {
          // Someone kept an old token: the session is compromised, end all of it.
          await tx`
            update refresh_tokens set revoked_at = now()
            where family_id = ${current.family_id} and revoked_at is null`;
          return { kind: "reused" };
        }
        if (current.revoked_at !== null || current.expired) return { kind: "invalid" };
        const [user] = await tx<UserRow[]>`
          select ${tx.unsafe(userColumns)} from users where id = ${current.user_id}`;
        if (user === undefined) return { kind: "invalid" };
        await tx`
          update refresh_tokens set rotated_at = now(), revoked_at = now() where token_hash = ${hash}`;
        await tx`
          insert into refresh_tokens (token_hash, family_id, user_id, expires_at)
          values (${next.hash}, ${current.family_id}, ${current.user_id}, ${next.expiresAt})`;
        return { kind: "rotated", user };
      });
    },

    async revokeRefreshFamily(hash) {
      await sql`
        update refresh_tokens set revoked_at = now()
        where revoked_at is null
          and family_id = (select family_id from refresh_tokens where token_hash = ${hash})`;
    },

    async activeKey() {
      const rows = await sql<SigningKeyRow[]>`
        select ${sql.unsafe(keyColumns)} from signing_keys where active`;
      return rows[0];
    },

    publishedKeys() {
      return sql<SigningKeyRow[]>`
        select ${sql.unsafe(keyColumns)} from signing_keys
        where retired_at is null order by created_at desc, kid`;
    },

    createKeyIfNone(key) {
      return sql.begin(async (tx) => {
        await tx`select pg_advisory_xact_lock(${KEY_LOCK.toString()}::bigint)`;
        const existing = await tx`select 1 from signing_keys where active`;
        if (existing.length > 0) return false;
        await tx`
          insert into signing_keys (kid, public_jwk, private_key_enc, active)
          values (${key.kid}, ${tx.json(key.public_jwk)}, ${key.private_key_enc}, true)`;
        return true;
      });
    },

    rotateKey(key, retireAfterS) {
      return sql.begin(async (tx) => {
        await tx`select pg_advisory_xact_lock(${KEY_LOCK.toString()}::bigint)`;
        await tx`update signing_keys set active = false, deactivated_at = now() where active`;
        await tx`
          insert into signing_keys (kid, public_jwk, private_key_enc, active)
          values (${key.kid}, ${tx.json(key.public_jwk)}, ${key.private_key_enc}, true)`;
        const retired = await tx<{ kid: string }[]>`
          update signing_keys set retired_at = now()
          where not active and retired_at is null
            and deactivated_at < now() - make_interval(secs => ${retireAfterS})
          returning kid`;
        return retired.map((r) => r.kid);
      });
    },
  };
}
