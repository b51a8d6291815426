import {
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamManager,
  type StoredMsg,
} from "@nats-io/jetstream";
import type { MsgHdrs } from "@nats-io/transport-node";
import { copyAppHeaders, EventHeaders, headerValue } from "./headers.js";
import type { EventNames } from "./names.js";

/** A message a consumer gave up on, as kept in the dead-letter stream. */
export interface DeadLetter {
  /** Sequence in the dead-letter stream: what {@link replayDeadLetter} takes. */
  seq: number;
  consumer: string;
  /** The subject it was originally published on (and is replayed to). */
  subject: string;
  /** Protobuf type from Meshmart-Event-Type ("" when absent). */
  eventType: string;
  /** The event id ("" when not known: an undecodable message without one). */
  eventId: string;
  reason: string;
  /** Deliveries the consumer made before giving up. */
  deliveries: number;
  /** Stream and sequence of the original message. */
  originalStream: string;
  originalSeq: number;
  /** When it was dead-lettered. */
  time: Date;
}

/** Filter for {@link listDeadLetters} and {@link replayAllDeadLetters}. */
export interface DeadLetterFilter {
  /** Only this consumer's dead letters. */
  consumer?: string;
  /** At most this many (listing only; default 1000). */
  limit?: number;
}

/** Dead letters in stream order (oldest first). */
export async function listDeadLetters(
  jsm: JetStreamManager,
  names: EventNames,
  filter: DeadLetterFilter = {},
): Promise<DeadLetter[]> {
  const limit = filter.limit ?? 1_000;
  const subject =
    filter.consumer === undefined
      ? `${names.namespace}.deadletter.>`
      : names.deadLetterSubject(filter.consumer);
  const found: DeadLetter[] = [];
  let seq = 1;
  while (found.length < limit) {
    // The next stored message at or after `seq`: skips deleted (replayed) ones in one call.
    let msg: StoredMsg | null;
    try {
      msg = await jsm.streams.getMessage(names.deadLetterStream, {
        seq,
        next_by_subj: subject,
      } as unknown as { seq: number });
    } catch (reason) {
      // No stream: no service of this namespace has started, so nothing was dead-lettered.
      if (reason instanceof JetStreamApiError && reason.code === JetStreamApiCodes.StreamNotFound) {
        break;
      }
      throw reason;
    }
    if (msg === null) break;
    found.push(describe(msg));
    seq = msg.seq + 1;
  }
  return found;
}

/** Result of replaying one dead letter. */
export interface ReplayResult {
  seq: number;
  subject: string;
  /** The Nats-Msg-Id it was republished with: `<event_id>:replay:<seq>`. */
  msgId: string;
  /** JetStream already had this replay (an earlier attempt published it before failing). */
  duplicate: boolean;
}

/**
 * Republishes dead letter `seq` to its original subject, then deletes it from the
 * dead-letter stream. It gets a new Nats-Msg-Id (`<event_id>:replay:<seq>`) so the
 * domain stream's dedupe window does not drop it; consumers still recognise the event by
 * the event_id in its payload, so one that already handled it skips it. Every consumer
 * of that subject sees the message again, and each but the one that failed skips it.
 * Throws when there is no such dead letter.
 */
export async function replayDeadLetter(
  jsm: JetStreamManager,
  names: EventNames,
  seq: number,
): Promise<ReplayResult> {
  const msg = await jsm.streams.getMessage(names.deadLetterStream, { seq });
  if (msg === null) throw new Error(`no dead letter ${seq} in ${names.deadLetterStream}`);
  const result = await republish(jsm, msg);
  await jsm.streams.deleteMessage(names.deadLetterStream, seq);
  return result;
}

/** Replays every dead letter (of one consumer, with `filter.consumer`); returns them. */
export async function replayAllDeadLetters(
  jsm: JetStreamManager,
  names: EventNames,
  filter: Omit<DeadLetterFilter, "limit"> = {},
): Promise<ReplayResult[]> {
  const results: ReplayResult[] = [];
  for (;;) {
    // Replayed ones are deleted, so each round starts over from the first left.
    const batch = await listDeadLetters(jsm, names, { ...filter, limit: 100 });
    if (batch.length === 0) return results;
    for (const letter of batch) results.push(await replayDeadLetter(jsm, names, letter.seq));
  }
}

async function republish(jsm: JetStreamManager, msg: StoredMsg): Promise<ReplayResult> {
  const letter = describe(msg);
  if (letter.subject === "") {
    throw new Error(`dead letter ${msg.seq} has no ${EventHeaders.deadLetterSubject} header`);
  }
  const msgId = `${letter.eventId || `seq-${msg.seq}`}:replay:${msg.seq}`;
  const ack = await jsm.jetstream().publish(letter.subject, msg.data, {
    headers: copyAppHeaders(msg.header, true),
    msgID: msgId,
  });
  return { seq: msg.seq, subject: letter.subject, msgId, duplicate: ack.duplicate };
}

function describe(msg: StoredMsg): DeadLetter {
  const h: MsgHdrs | undefined = msg.header;
  const value = (key: string) => headerValue(h, key) ?? "";
  return {
    seq: msg.seq,
    consumer: value(EventHeaders.deadLetterConsumer),
    subject: value(EventHeaders.deadLetterSubject),
    eventType: value(EventHeaders.eventType),
    eventId: value(EventHeaders.deadLetterEventId),
    reason: value(EventHeaders.deadLetterReason),
    deliveries: Number(value(EventHeaders.deadLetterDeliveries) || 0),
    originalStream: value(EventHeaders.deadLetterStream),
    originalSeq: Number(value(EventHeaders.deadLetterStreamSeq) || 0),
    time: msg.time,
  };
}
