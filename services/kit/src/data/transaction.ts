import type { Sql, TransactionSql } from "postgres";

/** Hands a transaction's final write to {@link beginWithLast}. */
export type LastWrite = (write: Promise<unknown>) => void;

/**
 * `sql.begin`, where the work may hand its final writes (statements whose answers it does
 * not need) to `last` instead of awaiting them: sql.begin then sends COMMIT right behind
 * them, one round trip for all. Should one fail, Postgres ends the transaction at that
 * COMMIT with a rollback (which is no error of its own), so the writes are awaited after
 * it and the first failure is the caller's error. A write must already be sent when it is
 * handed over (`.execute()`, or a helper that sends at the call such as writeEvents).
 */
export async function beginWithLast<T>(
  sql: Sql,
  work: (tx: TransactionSql, last: LastWrite) => Promise<T>,
): Promise<T> {
  const trailing: Promise<unknown>[] = [];
  const last: LastWrite = (write) => {
    // Handled at once: a rejection may arrive before the COMMIT's answer is awaited.
    write.catch(() => {});
    trailing.push(write);
  };
  const result = (await sql.begin((tx) => work(tx, last))) as T;
  await Promise.all(trailing);
  return result;
}
