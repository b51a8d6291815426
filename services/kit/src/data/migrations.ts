import { createHash } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import type { Logger } from "pino";
import type { Sql } from "postgres";

/** Advisory lock key shared by every replica of every service: "meshmart" in ASCII. */
const LOCK_KEY = 0x6d6573686d617274n;

/**
 * Applies `NNN_name.sql` files from `dir` in order, each in its own transaction, recording
 * them in `schema_migrations` with a checksum. Replicas starting together serialize on an
 * advisory lock; an applied migration that was edited afterwards stops the start, because
 * the database no longer matches the code's idea of it.
 */
export async function migrate(sql: Sql, dir: URL, logger: Logger): Promise<string[]> {
  const files = (await readdir(dir)).filter((f) => /^\d+_[\w-]+\.sql$/.test(f)).sort();
  const applied: string[] = [];
  await sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(${LOCK_KEY.toString()}::bigint)`;
    await tx`
      create table if not exists schema_migrations (
        version text primary key,
        checksum text not null,
        applied_at timestamptz not null default now()
      )`;
    const done = new Map(
      (
        await tx<
          { version: string; checksum: string }[]
        >`select version, checksum from schema_migrations`
      ).map((r) => [r.version, r.checksum]),
    );
    for (const file of files) {
      const text = await readFile(new URL(file, dir), "utf8");
      const checksum = createHash("sha256").update(text).digest("hex");
      const previous = done.get(file);
      if (previous !== undefined) {
        if (previous !== checksum) {
          throw new Error(
            `migration ${file} changed after it was applied; add a new migration instead`,
          );
        }
        continue;
      }
      await tx.unsafe(text);
      await tx`insert into schema_migrations (version, checksum) values (${file}, ${checksum})`;
      applied.push(file);
    }
  });
  if (applied.length > 0) logger.info({ applied }, "migrations applied");
  return applied;
}
