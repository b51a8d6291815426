import { headers, Match, type MsgHdrs } from "@nats-io/transport-node";
import type { TextMapGetter, TextMapSetter } from "@opentelemetry/api";

/** NATS header names the event layer reads and writes. */
export const EventHeaders = {
  /** JetStream's dedupe key; the relay sets it to the event_id. */
  msgId: "Nats-Msg-Id",
  contentType: "Content-Type",
  /** Fully-qualified protobuf type of the payload, e.g. meshmart.orders.v1.OrderPlaced. */
  eventType: "Meshmart-Event-Type",
  deadLetterReason: "Meshmart-Dead-Letter-Reason",
  deadLetterConsumer: "Meshmart-Dead-Letter-Consumer",
  deadLetterSubject: "Meshmart-Dead-Letter-Subject",
  deadLetterStream: "Meshmart-Dead-Letter-Stream",
  deadLetterStreamSeq: "Meshmart-Dead-Letter-Stream-Seq",
  deadLetterDeliveries: "Meshmart-Dead-Letter-Deliveries",
  deadLetterEventId: "Meshmart-Dead-Letter-Event-Id",
} as const;

/** The content type of every event payload: a binary protobuf message. */
export const PROTOBUF_CONTENT_TYPE = "application/x-protobuf";

const DEAD_LETTER_PREFIX = "meshmart-dead-letter-";

/** One header's value (the first, if repeated), case-insensitively; undefined when absent. */
export function headerValue(h: MsgHdrs | undefined, key: string): string | undefined {
  if (h === undefined || !h.has(key, Match.IgnoreCase)) return undefined;
  return h.get(key, Match.IgnoreCase);
}

/** Headers as a plain record (first value of each), for handlers and logs. */
export function headersRecord(h: MsgHdrs | undefined): Record<string, string> {
  const record: Record<string, string> = {};
  if (h === undefined) return record;
  for (const key of h.keys()) record[key] = h.get(key);
  return record;
}

/**
 * A copy of a message's application headers: without JetStream's own (`Nats-*`, which
 * would dedupe or constrain the copy) and, when `dropDeadLetter`, without the
 * dead-letter annotations.
 */
export function copyAppHeaders(h: MsgHdrs | undefined, dropDeadLetter: boolean): MsgHdrs {
  const copy = headers();
  if (h === undefined) return copy;
  for (const key of h.keys()) {
    const lower = key.toLowerCase();
    if (lower.startsWith("nats-")) continue;
    if (dropDeadLetter && lower.startsWith(DEAD_LETTER_PREFIX)) continue;
    for (const value of h.values(key)) copy.append(key, value);
  }
  return copy;
}

/** A header value safe to send: one line, at most `max` characters. */
export function headerSafe(value: string, max = 512): string {
  const line = value.replace(/[\r\n\t]+/g, " ").trim();
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}

/** Reads W3C trace context from NATS headers. */
export const natsHeadersGetter: TextMapGetter<MsgHdrs | undefined> = {
  get: (carrier, key) => headerValue(carrier, key),
  keys: (carrier) => (carrier === undefined ? [] : carrier.keys()),
};

/** Writes W3C trace context into NATS headers. */
export const natsHeadersSetter: TextMapSetter<MsgHdrs> = {
  set: (carrier, key, value) => carrier.set(key, value),
};
