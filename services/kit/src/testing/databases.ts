import { randomBytes } from "node:crypto";
import postgres from "postgres";

// Postgres truncates identifiers longer than this (NAMEDATALEN - 1) instead of failing.
const MAX_IDENTIFIER = 63;

/** `name` as a quoted SQL identifier. */
export function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** `adminUrl` pointed at database `name` (same host, credentials and parameters). */
export function databaseUrl(adminUrl: string, name: string): string {
  const url = new URL(adminUrl);
  url.pathname = `/${encodeURIComponent(name)}`;
  return url.toString();
}

/**
 * A name unique to this call: `${prefix}_${pid}_${random}`, lowercased, limited to
 * `[a-z0-9_]` and to 63 characters, so it is valid unquoted as a Postgres identifier,
 * a NATS stream or consumer name and a Redis key prefix.
 */
export function uniqueName(prefix: string): string {
  const suffix = `_${process.pid}_${randomBytes(5).toString("hex")}`;
  let head = prefix.toLowerCase().replace(/[^a-z0-9_]+/g, "_");
  if (!/^[a-z_]/.test(head)) head = `t_${head}`;
  return head.slice(0, MAX_IDENTIFIER - suffix.length) + suffix;
}

/**
 * Creates database `name` on the server at `adminUrl`. Returns false when it already
 * existed, so callers can use it as "create if missing".
 */
export async function createDatabase(adminUrl: string, name: string): Promise<boolean> {
  return withAdmin(adminUrl, async (sql) => {
    try {
      await sql.unsafe(`create database ${quoteIdentifier(name)}`);
      return true;
    } catch (error) {
      // 42P04 duplicate_database; 23505 when a concurrent create won the race on pg_database.
      const code = (error as { code?: string }).code;
      if (code === "42P04" || code === "23505") return false;
      throw error;
    }
  });
}

/**
 * Drops database `name` if it exists. On Postgres 13+ it disconnects sessions still on
 * it (WITH (FORCE)), so a test's leaked pool cannot block cleanup.
 */
export async function dropDatabase(adminUrl: string, name: string): Promise<void> {
  await withAdmin(adminUrl, async (sql) => {
    const [row] = await sql<{ v: string }[]>`select current_setting('server_version_num') as v`;
    const force = Number(row?.v ?? 0) >= 130000 ? " with (force)" : "";
    await sql.unsafe(`drop database if exists ${quoteIdentifier(name)}${force}`);
  });
}

/** Whether a Postgres at `url` accepts a connection and a query within a couple of seconds. */
export async function canConnectPostgres(url: string): Promise<boolean> {
  try {
    await withAdmin(url, (sql) => sql`select 1`);
    return true;
  } catch {
    return false;
  }
}

async function withAdmin<T>(url: string, fn: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const sql = postgres(url, { max: 1, connect_timeout: 3, onnotice: () => {} });
  try {
    return await fn(sql);
  } finally {
    await sql.end({ timeout: 1 });
  }
}
