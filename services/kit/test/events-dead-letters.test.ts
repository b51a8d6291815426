import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { Registry } from "prom-client";
import { ProductCreatedSchema } from "../gen/meshmart/catalog/v1/events_pb.js";
import { createEventConsumer, type EventConsumer, onEvent } from "../src/events/consumer.js";
import {
  listDeadLetters,
  replayAllDeadLetters,
  replayDeadLetter,
} from "../src/events/dead-letters.js";
import {
  type EventsFixture,
  openEventsFixture,
  publishEvent,
  readStream,
  silentLogger,
  waitFor,
} from "./events-support.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const run = promisify(execFile);

let fx: EventsFixture;
const consumers: EventConsumer[] = [];
before(async () => {
  fx = await openEventsFixture("kit_events_dlq", ["catalog"]);
  await fx.sql`create table handled (consumer text, product_id text)`;
});
after(async () => {
  await Promise.all(consumers.map((c) => c.stop()));
  await fx.close();
});

/**
 * Two consumers of ProductCreated: "fussy" fails on products in `broken` (until they are
 * fixed), "steady" never fails. Both record what they handled.
 */
const broken = new Set<string>();
async function startConsumers(): Promise<void> {
  for (const durable of ["fussy", "steady"]) {
    const consumer = createEventConsumer({
      sql: fx.sql,
      nc: fx.nc,
      names: fx.names,
      durable,
      domains: ["catalog"],
      handlers: [
        onEvent(ProductCreatedSchema, async (tx, event) => {
          if (durable === "fussy" && broken.has(event.productId)) {
            throw new Error(`cannot handle ${event.productId}`);
          }
          await tx`insert into handled values (${durable}, ${event.productId})`;
        }),
      ],
      maxDeliver: 2,
      backoffMs: [20],
      logger: silentLogger,
      registry: new Registry(),
    });
    consumers.push(consumer);
    await consumer.start();
  }
}

async function handled(durable: string): Promise<string[]> {
  const rows = await fx.sql<{ product_id: string }[]>`
    select product_id from handled where consumer = ${durable} order by product_id`;
  return rows.map((r) => r.product_id);
}

test("dead letters are listed, replayed once fixed, and removed; other consumers skip replays", async () => {
  await startConsumers();
  for (const p of ["a", "b", "c"]) broken.add(p);
  const ids = new Map<string, string>();
  for (const p of ["a", "b", "c", "ok"]) {
    ids.set(p, await publishEvent(fx, ProductCreatedSchema, { productId: p }));
  }
  const letters = await waitFor("three dead letters", async () => {
    const found = await listDeadLetters(fx.jsm, fx.names);
    return found.length === 3 ? found : undefined;
  });
  await waitFor("steady handled all four", async () =>
    (await handled("steady")).length === 4 ? true : undefined,
  );
  assert.deepEqual(await handled("fussy"), ["ok"]);
  assert.deepEqual(
    letters.map((l) => [l.consumer, l.eventId, l.reason]),
    ["a", "b", "c"].map((p) => ["fussy", ids.get(p), `cannot handle ${p}`]),
  );
  assert.deepEqual(await listDeadLetters(fx.jsm, fx.names, { consumer: "steady" }), []);

  // Fixed: replay one.
  broken.clear();
  const [first, second, third] = letters;
  assert.ok(first && second && third);
  const result = await replayDeadLetter(fx.jsm, fx.names, first.seq);
  assert.equal(result.subject, fx.names.subjectOf(ProductCreatedSchema));
  assert.equal(result.msgId, `${ids.get("a")}:replay:${first.seq}`);
  await waitFor("a handled by fussy", async () =>
    (await handled("fussy")).includes("a") ? true : undefined,
  );
  assert.deepEqual(
    (await listDeadLetters(fx.jsm, fx.names)).map((l) => l.seq),
    [second.seq, third.seq],
  );
  await assert.rejects(replayDeadLetter(fx.jsm, fx.names, first.seq), /no dead letter/);

  // The rest, through the CLI.
  const { stdout: listed } = await cli("list");
  assert.match(listed, /SEQ\s+TIME\s+CONSUMER\s+SUBJECT/);
  assert.match(listed, new RegExp(`${second.seq}\\s.*fussy\\s.*cannot handle b`));
  assert.match(listed, /2 dead letter\(s\)/);
  const { stdout: replayed } = await cli("replay-all", "--consumer", "fussy");
  assert.match(replayed, /2 dead letter\(s\) replayed/);
  await waitFor("fussy handled everything", async () =>
    (await handled("fussy")).length === 4 ? true : undefined,
  );
  assert.deepEqual(await listDeadLetters(fx.jsm, fx.names), []);

  // steady saw every replay (same subject) but its inbox skipped them all.
  assert.deepEqual(await handled("steady"), ["a", "b", "c", "ok"]);
  const stored = await readStream(fx.jsm, fx.names.stream("catalog"));
  assert.equal(stored.length, 7, "4 originals + 3 replays");
});

test("replay-all with nothing to replay, and a bad sequence", async () => {
  assert.deepEqual(await replayAllDeadLetters(fx.jsm, fx.names), []);
  const { stdout } = await cli("list");
  assert.match(stdout, /no dead letters in/);
  await assert.rejects(cli("replay", "zero"), (error: { code?: number; stderr?: string }) => {
    assert.equal(error.code, 2);
    assert.match(error.stderr ?? "", /needs a dead-letter sequence number/);
    return true;
  });
});

function cli(...args: string[]): Promise<{ stdout: string; stderr: string }> {
  return run(
    process.execPath,
    [
      "--conditions=development",
      "--import",
      "tsx",
      "scripts/dead-letters.ts",
      ...args,
      "--namespace",
      fx.names.namespace,
      "--nats",
      fx.natsUrl,
    ],
    { cwd: ROOT, timeout: 30_000 },
  );
}
