import { randomUUID } from "node:crypto";
import {
  create,
  type DescMessage,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { context, propagation } from "@opentelemetry/api";
import type { Logger } from "pino";
import type { Sql, TransactionSql } from "postgres";
import { migrate } from "../data/migrations.js";
import type { EventNames } from "./names.js";

/** An event message ready to be written to the outbox. */
export interface OutboundEvent {
  readonly schema: DescMessage;
  readonly message: MessageShape<DescMessage>;
  /** The message's event_id: the outbox key and the JetStream Nats-Msg-Id. */
  readonly eventId: string;
}

/**
 * Builds an event message with a fresh `event_id` (UUID) and `occurred_at` (now), the
 * two fields every event in proto/ starts with, unless `init` sets them.
 */
export function newEvent<Desc extends DescMessage>(
  schema: Desc,
  init: MessageInitShape<Desc>,
): OutboundEvent {
  const message = create(schema, {
    eventId: randomUUID(),
    occurredAt: timestampNow(),
    ...(init as object),
  } as unknown as MessageInitShape<Desc>) as MessageShape<DescMessage> & { eventId?: unknown };
  const { eventId } = message;
  if (typeof eventId !== "string" || eventId === "") {
    throw new Error(`${schema.typeName} has no event_id field`);
  }
  return { schema, message, eventId };
}

/**
 * Writes events to the outbox. Call it with the transaction that makes the change the
 * events announce: both commit or neither does, and the relay publishes what committed.
 * The active trace context is stored with each row so consumers continue the trace. The
 * statement is sent at the call, in call order, so a caller may leave it unawaited until
 * after its COMMIT, which then travels with it.
 */
export function writeEvents(
  tx: TransactionSql | Sql,
  names: EventNames,
  events: readonly OutboundEvent[],
): Promise<void> {
  if (events.length === 0) return Promise.resolve();
  const rows = outboxRows(names, events);
  return tx`
    insert into event_outbox ${tx(rows, "event_id", "subject", "event_type", "payload", "headers")}
    on conflict (event_id) do nothing`
    .execute()
    .then(() => undefined);
}

/** One `event_outbox` row as {@link outboxRows} builds it. */
export interface OutboxInsertRow {
  event_id: string;
  subject: string;
  event_type: string;
  payload: Buffer;
  headers: Record<string, string>;
}

/**
 * The outbox rows {@link writeEvents} inserts, for a store that writes them inside a
 * statement of its own (one round trip with the change they announce). The active trace
 * context goes with each row, as writeEvents does it.
 */
export function outboxRows(names: EventNames, events: readonly OutboundEvent[]): OutboxInsertRow[] {
  const headers: Record<string, string> = {};
  propagation.inject(context.active(), headers);
  return events.map((e) => ({
    event_id: e.eventId,
    subject: names.subjectOf(e.schema),
    event_type: e.schema.typeName,
    payload: Buffer.from(toBinary(e.schema, e.message)),
    headers,
  }));
}

/** Creates the kit's event tables (outbox, inbox) in a service's database. */
export async function migrateEventTables(sql: Sql, logger: Logger): Promise<string[]> {
  return migrate(sql, new URL("../../migrations/events/", import.meta.url), logger);
}
