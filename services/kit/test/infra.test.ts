import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { Redis } from "ioredis";
import postgres from "postgres";
import { ensureExecutable, findExecutable } from "../src/testing/apt.js";
import {
  createTestDatabase,
  databaseUrl,
  ensureInfra,
  freePort,
  isPortOpen,
  natsInfo,
  redisPing,
  startOwnedPostgres,
  testNatsUrl,
  testPostgresUrl,
  testRedisUrl,
  uniqueName,
} from "../src/testing/index.js";

/** Runs one query on a fresh connection, so a stopped server fails it instead of a pool retrying. */
async function queryOnce<T>(url: string, fn: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const sql = postgres(url, { max: 1, connect_timeout: 2, onnotice: () => {} });
  try {
    return await fn(sql);
  } finally {
    await sql.end({ timeout: 1 });
  }
}

describe("startOwnedPostgres", () => {
  test("serves, stops, starts again on the same URL, and disposes of its data dir", async () => {
    const pg = await startOwnedPostgres();
    try {
      const [row] = await queryOnce(pg.url, (sql) => sql<{ one: number }[]>`select 1 as one`);
      assert.equal(row?.one, 1);
      assert.equal(pg.initialised, true);

      await pg.stop();
      await assert.rejects(queryOnce(pg.url, (sql) => sql`select 1`));
      assert.equal(await isPortOpen("127.0.0.1", pg.port), false);

      await pg.start();
      const [again] = await queryOnce(pg.url, (sql) => sql<{ one: number }[]>`select 1 as one`);
      assert.equal(again?.one, 1);

      // Repeatable, as health tests flip a dependency more than once.
      await pg.stop();
      await pg.stop();
      await pg.start();
      await pg.start();
      await queryOnce(pg.url, (sql) => sql`select 1`);
    } finally {
      await pg.dispose();
    }
    assert.equal(existsSync(pg.dataDir), false);
  });

  test("keeps a caller-supplied data dir, and reuses it without initdb", async () => {
    const parent = await mkdtemp(join(tmpdir(), "meshmart-infra-test-"));
    // As root the server runs as another user, who must be able to enter the parent.
    await chmod(parent, 0o755);
    try {
      const dataDir = join(parent, "pg");
      const first = await startOwnedPostgres({ dataDir });
      await queryOnce(first.url, (sql) => sql`create table kept (id int)`);
      await first.dispose();
      assert.equal(existsSync(join(dataDir, "PG_VERSION")), true);

      const second = await startOwnedPostgres({ dataDir });
      try {
        assert.equal(second.initialised, false);
        await queryOnce(second.url, (sql) => sql`select * from kept`);
      } finally {
        await second.dispose();
      }
    } finally {
      await rm(parent, { recursive: true, force: true });
    }
  });
});

describe("createTestDatabase", () => {
  test("creates a uniquely named database and drops it", async () => {
    const adminUrl = await testPostgresUrl();
    const a = await createTestDatabase("Infra-Test");
    const b = await createTestDatabase("Infra-Test");
    try {
      assert.notEqual(a.name, b.name);
      assert.match(a.name, /^infra_test_\d+_[0-9a-f]+$/);
      const [row] = await queryOnce(
        a.url,
        (sql) => sql<{ db: string }[]>`select current_database() as db`,
      );
      assert.equal(row?.db, a.name);
    } finally {
      await a.drop();
      await b.drop();
    }
    const left = await queryOnce(
      adminUrl,
      (sql) => sql`select 1 from pg_database where datname in (${a.name}, ${b.name})`,
    );
    assert.equal(left.length, 0);
  });

  test("drop succeeds while a session is still connected", async () => {
    const db = await createTestDatabase("infra_force");
    const leaked = postgres(db.url, { max: 1, onnotice: () => {} });
    await leaked`select 1`;
    try {
      await db.drop();
    } finally {
      await leaked.end({ timeout: 1 }).catch(() => {});
    }
  });
});

describe("test helpers", () => {
  test("testRedisUrl answers PING", async () => {
    const redis = new Redis(await testRedisUrl(), { lazyConnect: true, maxRetriesPerRequest: 1 });
    try {
      await redis.connect();
      assert.equal(await redis.ping(), "PONG");
    } finally {
      redis.disconnect();
    }
  });

  test("testNatsUrl has JetStream", async () => {
    const url = new URL(await testNatsUrl());
    const info = await natsInfo(url.hostname, Number(url.port));
    assert.equal(info?.jetstream, true);
  });

  test("uniqueName and databaseUrl", () => {
    const name = uniqueName("Orders.Saga-Test");
    assert.match(name, /^orders_saga_test_\d+_[0-9a-f]{10}$/);
    assert.notEqual(uniqueName("x"), uniqueName("x"));
    assert.ok(uniqueName("p".repeat(100)).length <= 63);
    assert.equal(
      databaseUrl("postgres://u:p%40ss@127.0.0.1:5432/postgres?sslmode=disable", "shop_1"),
      "postgres://u:p%40ss@127.0.0.1:5432/shop_1?sslmode=disable",
    );
  });

  test("a missing binary fails with the Debian package to install", async () => {
    await assert.rejects(
      ensureExecutable("meshmart-no-such-server", "meshmart-no-such-package", {
        installMissing: false,
        log: () => {},
        alternative: "or set REDIS_URL",
      }),
      /apt-get install -y meshmart-no-such-package`, or set REDIS_URL/,
    );
  });

  test("freePort returns a bindable port", async () => {
    const port = await freePort();
    assert.ok(port > 0 && port < 65536);
    assert.equal(await isPortOpen("127.0.0.1", port), false);
  });
});

describe("ensureInfra", () => {
  test("uses configured URLs as they are and starts nothing", async () => {
    const lines: string[] = [];
    const infra = await ensureInfra({
      dataDir: join(tmpdir(), "meshmart-unused"),
      ports: { postgres: 1, redis: 1, nats: 1 },
      log: (line) => lines.push(line),
      installMissing: false,
      urls: {
        postgres: await testPostgresUrl(),
        redis: await testRedisUrl(),
        nats: await testNatsUrl(),
      },
    });
    assert.deepEqual(infra.started, []);
    assert.equal(infra.redisUrl, await testRedisUrl());
    assert.match(infra.describe.postgres, /^using DATABASE_URL/);
    assert.equal(lines.length, 3);
    await infra.stop();
  });

  const binaries = Promise.all([findExecutable("redis-server"), findExecutable("nats-server")]);
  test("starts its own Redis and NATS when told not to reuse, and stops only those", async (t) => {
    const [redisBin, natsBin] = await binaries;
    if (redisBin === undefined || natsBin === undefined) {
      t.skip("redis-server or nats-server is not installed");
      return;
    }
    const dataDir = await mkdtemp(join(tmpdir(), "meshmart-infra-test-"));
    const ports = { postgres: 1, redis: await freePort(), nats: await freePort() };
    try {
      const infra = await ensureInfra({
        dataDir,
        ports,
        log: () => {},
        installMissing: false,
        reuseLocal: false,
        urls: { postgres: await testPostgresUrl() },
      });
      try {
        assert.deepEqual(infra.started, ["redis", "nats"]);
        assert.equal(infra.redisUrl, `redis://127.0.0.1:${ports.redis}`);
        assert.equal(await redisPing("127.0.0.1", ports.redis), true);
        assert.equal((await natsInfo("127.0.0.1", ports.nats))?.jetstream, true);
      } finally {
        await infra.stop();
      }
      assert.equal(await isPortOpen("127.0.0.1", ports.redis), false);
      assert.equal(await isPortOpen("127.0.0.1", ports.nats), false);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
