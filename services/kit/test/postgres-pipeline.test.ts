/**
 * patches/postgres+3.4.9.patch: a transaction's BEGIN that lands on a connection already
 * running queries must still reserve that connection. Unpatched, postgres.js skipped the
 * reservation whenever the BEGIN filled the connection's pipeline, so under load the
 * transaction failed (UNSAFE_TRANSACTION, as orders saw in a flash sale, or a TypeError
 * when the BEGIN was the second query on its connection), or its
 * connection went back to the pool mid-transaction for unrelated queries to run inside.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createTestDatabase, type TestDatabase } from "@meshmart/kit/testing";
import postgres from "postgres";

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase("pg_pipeline");
});
after(() => db?.drop());

test("a transaction begun beside running queries keeps its connection to itself", async () => {
  // A one-query pipeline makes every BEGIN that shares a busy connection fill it.
  // max_pipeline is a postgres.js option its type definitions leave out.
  const pipeline = { max_pipeline: 1 };
  const sql = postgres(db.url, { max: 1, onnotice: () => {}, ...pipeline });
  try {
    await sql`create table t (n int)`;
    // One query in flight, then the BEGIN: it joins that connection's pipeline and fills it.
    const busy = [sql`select pg_sleep(0.05)`.execute()];
    const inside = sql.begin(async (tx) => {
      await tx`insert into t values (1)`;
      // Seen by this transaction only until it commits.
      const [row] = await tx`select count(*)::int as n from t`;
      return row?.n;
    });
    const [seen] = await Promise.all([inside, ...busy]);
    assert.equal(seen, 1);
    const [after] = await sql`select count(*)::int as n from t`;
    assert.equal(after?.n, 1);
  } finally {
    await sql.end({ timeout: 5 });
  }
});
