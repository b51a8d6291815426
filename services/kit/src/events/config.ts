import { z } from "zod";
import { createEventNames } from "./names.js";

const positiveInt = z.coerce.number().int().positive();
const NATS_SERVER = /^(nats|tls):\/\/[^\s,/]+\/?$/;

/**
 * Event settings to spread into the schema of a service that publishes or consumes
 * events: `kitConfigSchema.extend({ ...eventConfigFields, ... })`.
 */
export const eventConfigFields = {
  /** The NATS server, `nats://host:4222`, or a comma-separated list of a cluster's seeds. */
  NATS_URL: z
    .string()
    .refine(
      (v) => v.split(",").every((s) => NATS_SERVER.test(s.trim())),
      "must be a nats:// URL (or a comma-separated list of them)",
    ),
  /**
   * Prefix of every subject and stream: `meshmart` in a deployment; a test run or a second
   * environment sharing a NATS server picks its own.
   */
  EVENTS_NAMESPACE: z
    .string()
    .refine(validNamespace, "must be 1-32 of [a-z0-9_], starting with a letter")
    .default("meshmart"),
  /** Copies of each stream in a NATS cluster: 3 in production, 1 on a single server. */
  STREAM_REPLICAS: z.coerce.number().int().min(1).max(5).default(1),
  /** How long a stream keeps events: the window in which a consumer that was away catches up. */
  STREAM_MAX_AGE_MS: positiveInt.default(7 * 24 * 3_600_000),
  /** JetStream drops a message whose Nats-Msg-Id (the event_id) it saw within this window. */
  STREAM_DUPLICATE_WINDOW_MS: positiveInt.default(2 * 60_000),
  /** Outbox rows the relay publishes per transaction. */
  OUTBOX_BATCH_SIZE: z.coerce.number().int().min(1).max(10_000).default(256),
  /**
   * The relay's least time between two publishing batches while commits keep coming (a
   * wake-up sooner waits, gathering commits); after a quiet spell a commit goes at once.
   */
  OUTBOX_GATHER_MS: z.coerce.number().int().min(0).max(1_000).default(25),
  /** Deliveries of one event before a consumer gives up and dead-letters it. */
  CONSUMER_MAX_DELIVER: z.coerce.number().int().min(1).max(100).default(5),
};

const eventsConfigSchema = z.object(eventConfigFields);

/** Parsed event settings; a service config that spread {@link eventConfigFields} satisfies it. */
export type EventsConfig = z.infer<typeof eventsConfigSchema>;

// One rule for namespaces, the one names.ts enforces.
function validNamespace(namespace: string): boolean {
  try {
    createEventNames(namespace);
    return true;
  } catch {
    return false;
  }
}
