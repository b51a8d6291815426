/**
 * patches/postgres+3.4.9.patch: a transaction's BEGIN that lands on a connection already
 * running queries must still reserve that connection. Unpatched, postgres.js skipped the
 * reservation whenever the BEGIN filled the connection's pipeline, so under load the
 * transaction failed (UNSAFE_TRANSACTION, as orders saw in a flash sale, or a TypeError
 * when the BEGIN was the second query on its connection), or its
 * connection went back to the pool mid-transaction for unrelated queries to run inside.
 * And sql.begin sends the work's first statement right behind BEGIN, without waiting for
 * BEGIN's answer: one round trip less per transaction.
 */
import assert from "node:assert/strict";
import { type AddressInfo, connect, createServer, type Socket } from "node:net";
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

/** A TCP relay to Postgres that counts the client's writes (each one a flight to the server). */
async function countingRelay(target: URL) {
  let writes = 0;
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    sockets.add(client).add(upstream);
    client.on("data", (chunk) => {
      writes += 1;
      upstream.write(chunk);
    });
    upstream.pipe(client);
    for (const s of [client, upstream])
      s.on("error", () => {}).on("close", () => sockets.delete(s));
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = new URL(target);
  url.port = String((server.address() as AddressInfo).port);
  return {
    url: url.href,
    writes: () => writes,
    close() {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

test("a transaction's first statement goes out with its BEGIN: one flight less", async () => {
  const relay = await countingRelay(new URL(db.url));
  const sql = postgres(relay.url, { max: 1, onnotice: () => {} });
  try {
    await sql`create table flights (n int)`;
    const once = () =>
      sql.begin(async (tx) => {
        await tx`insert into flights values (${1})`;
      });
    // The first run prepares the statement (a describe round trip of its own).
    await once();
    const before = relay.writes();
    await once();
    // BEGIN + INSERT, then COMMIT. Awaiting BEGIN first made it three.
    assert.equal(relay.writes() - before, 2);
    const [row] = await sql`select count(*)::int as n from flights`;
    assert.equal(row?.n, 2);
  } finally {
    await sql.end({ timeout: 5 });
    relay.close();
  }
});

test("the statement sent with BEGIN runs inside the transaction, and rolls back with it", async () => {
  const sql = postgres(db.url, { max: 1, onnotice: () => {} });
  try {
    await sql`create table inside (n int)`;
    const times = await sql.begin(async (tx) => {
      const [first] = await tx<{ t: Date }[]>`select now() as t`;
      await tx`select pg_sleep(0.02)`;
      const [second] = await tx<{ t: Date }[]>`select now() as t`;
      return [first?.t.getTime(), second?.t.getTime()];
    });
    // now() is the transaction's start: the same for both only if both ran in it.
    assert.equal(times[0], times[1]);
    await assert.rejects(
      sql.begin(async (tx) => {
        await tx`insert into inside values (1)`;
        await tx`select 1 / 0`;
      }),
      /division by zero/,
    );
    const [row] = await sql`select count(*)::int as n from inside`;
    assert.equal(row?.n, 0);
  } finally {
    await sql.end({ timeout: 5 });
  }
});
