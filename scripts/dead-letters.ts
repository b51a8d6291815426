/**
 * Inspect and replay the event dead-letter stream:
 *
 *   node --conditions=development --import tsx scripts/dead-letters.ts list [--consumer name]
 *   node --conditions=development --import tsx scripts/dead-letters.ts replay <seq>
 *   node --conditions=development --import tsx scripts/dead-letters.ts replay-all [--consumer name]
 *
 * Options: --namespace ns (default EVENTS_NAMESPACE, else "meshmart"), --nats url (default
 * NATS_URL, else nats://127.0.0.1:4222), --json (list as JSON lines).
 *
 * A replay republishes the message to its original subject with a new Nats-Msg-Id
 * (`<event_id>:replay:<seq>`) and deletes it from the dead-letter stream; consumers that
 * handled the event before skip it by its event_id (inbox), the one that failed retries it.
 */
import { parseArgs } from "node:util";
import {
  connectNats,
  createEventNames,
  type DeadLetter,
  listDeadLetters,
  replayAllDeadLetters,
  replayDeadLetter,
} from "@meshmart/kit";
import { jetstreamManager } from "@nats-io/jetstream";
import { pino } from "pino";

const USAGE = `usage: dead-letters.ts list|replay <seq>|replay-all [--consumer name] [--namespace ns] [--nats url] [--json]`;

const out = (line: string): void => {
  process.stdout.write(`${line}\n`);
};

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      namespace: { type: "string" },
      nats: { type: "string" },
      consumer: { type: "string" },
      json: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  const [command, arg] = positionals;
  if (values.help || command === undefined) {
    out(USAGE);
    return command === undefined && !values.help ? 2 : 0;
  }
  const names = createEventNames(values.namespace ?? process.env.EVENTS_NAMESPACE ?? "meshmart");
  const url = values.nats ?? process.env.NATS_URL ?? "nats://127.0.0.1:4222";
  const filter = values.consumer === undefined ? {} : { consumer: values.consumer };
  const logger = pino({ level: "warn" }, pino.destination(2));
  const nc = await connectNats({ url, name: "meshmart-dead-letters", logger });
  try {
    const jsm = await jetstreamManager(nc);
    switch (command) {
      case "list": {
        const letters = await listDeadLetters(jsm, names, filter);
        if (values.json) for (const letter of letters) out(JSON.stringify(letter));
        else printTable(letters, names.deadLetterStream);
        return 0;
      }
      case "replay": {
        const seq = Number(arg);
        if (!Number.isSafeInteger(seq) || seq < 1) {
          console.error(`replay needs a dead-letter sequence number\n${USAGE}`);
          return 2;
        }
        const result = await replayDeadLetter(jsm, names, seq);
        out(`replayed ${result.seq} to ${result.subject} as ${result.msgId}`);
        return 0;
      }
      case "replay-all": {
        const results = await replayAllDeadLetters(jsm, names, filter);
        for (const r of results) out(`replayed ${r.seq} to ${r.subject} as ${r.msgId}`);
        out(`${results.length} dead letter(s) replayed`);
        return 0;
      }
      default:
        console.error(`unknown command ${JSON.stringify(command)}\n${USAGE}`);
        return 2;
    }
  } finally {
    await nc.drain().catch(() => nc.close());
  }
}

function printTable(letters: DeadLetter[], stream: string): void {
  if (letters.length === 0) {
    out(`no dead letters in ${stream}`);
    return;
  }
  const rows = letters.map((l) => [
    String(l.seq),
    l.time.toISOString(),
    l.consumer,
    l.subject,
    l.eventType,
    l.eventId,
    String(l.deliveries),
    l.reason,
  ]);
  const header = ["SEQ", "TIME", "CONSUMER", "SUBJECT", "TYPE", "EVENT ID", "TRIES", "REASON"];
  // Every column but the reason is padded; the reason runs to the end of the line.
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const format = (cells: string[]) =>
    cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join("  ");
  out(format(header));
  for (const row of rows) out(format(row));
  out(`${letters.length} dead letter(s) in ${stream}`);
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (reason: unknown) => {
    console.error(reason instanceof Error ? reason.message : String(reason));
    process.exitCode = 1;
  },
);
