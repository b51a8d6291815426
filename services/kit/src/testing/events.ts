import { randomUUID } from "node:crypto";
import { create, type DescMessage, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import {
  type JetStreamClient,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
  type StoredMsg,
} from "@nats-io/jetstream";
import { headers, type NatsConnection } from "@nats-io/transport-node";
import { createEventNames, type EventNames } from "../events/names.js";
import { connectNats } from "../events/nats.js";
import { createLogger } from "../observability/logger.js";
import { testNatsUrl, uniqueName } from "./infra.js";

/** Options for {@link TestEvents.publish}. */
export interface TestPublishOptions {
  /** Nats-Msg-Id; fresh by default, so publishing an event twice is a redelivery. */
  msgId?: string;
  /** Overrides the Meshmart-Event-Type header. */
  eventType?: string;
  /** Raw bytes instead of the encoded message: a poison message. */
  payload?: Uint8Array;
  /** More headers, e.g. a traceparent. */
  extraHeaders?: Record<string, string>;
}

/** A test run's own slice of the shared NATS server: a namespace nobody else uses. */
export interface TestEvents {
  namespace: string;
  names: EventNames;
  natsUrl: string;
  /** NATS_URL and EVENTS_NAMESPACE, to spread into a service's test environment. */
  env: { NATS_URL: string; EVENTS_NAMESPACE: string };
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  /** Publishes an event as the outbox relay does (headers included); returns its event_id. */
  publish<Desc extends DescMessage>(
    schema: Desc,
    init: MessageInitShape<Desc>,
    options?: TestPublishOptions,
  ): Promise<string>;
  /** Every message in one of the namespace's streams, in order. */
  read(stream: string): Promise<StoredMsg[]>;
  /** Deletes the namespace's streams and closes the connection. */
  close(): Promise<void>;
}

/**
 * Opens a run-unique event namespace on the test NATS server (TEST_NATS_URL or the local
 * one), or the given one. Streams appear as services start under it; close() deletes
 * them all.
 */
export async function openTestEvents(
  label = "t",
  options: { natsUrl?: string; namespace?: string } = {},
): Promise<TestEvents> {
  const natsUrl = options.natsUrl ?? (await testNatsUrl());
  const namespace =
    options.namespace ??
    uniqueName(label)
      .replace(/[^a-z0-9_]/g, "_")
      .slice(0, 32);
  const names = createEventNames(namespace);
  const nc = await connectNats({
    url: natsUrl,
    name: `test-${namespace}`,
    logger: createLogger({ service: "test-events", level: "silent" }),
  });
  const js = jetstream(nc);
  const jsm = await jetstreamManager(nc);
  return {
    namespace,
    names,
    natsUrl,
    env: { NATS_URL: natsUrl, EVENTS_NAMESPACE: namespace },
    nc,
    js,
    jsm,
    publish: (schema, init, options) => publishLikeRelay(js, names, schema, init, options),
    read: (stream) => readStream(jsm, stream),
    async close() {
      try {
        await deleteNamespaceStreams(jsm, names);
      } finally {
        await nc.close();
      }
    },
  };
}

/**
 * Publishes an event as the outbox relay does (content type and event type headers, a
 * Nats-Msg-Id), bypassing the outbox; returns its event_id.
 */
export async function publishLikeRelay<Desc extends DescMessage>(
  js: JetStreamClient,
  names: EventNames,
  schema: Desc,
  init: MessageInitShape<Desc>,
  options: TestPublishOptions = {},
): Promise<string> {
  const message = create(schema, {
    eventId: randomUUID(),
    ...(init as object),
  } as unknown as MessageInitShape<Desc>);
  const eventId = (message as unknown as { eventId: string }).eventId;
  const h = headers();
  h.set("Content-Type", "application/x-protobuf");
  h.set("Meshmart-Event-Type", options.eventType ?? schema.typeName);
  for (const [key, value] of Object.entries(options.extraHeaders ?? {})) h.set(key, value);
  await js.publish(names.subjectOf(schema), options.payload ?? toBinary(schema, message), {
    headers: h,
    msgID: options.msgId ?? randomUUID(),
  });
  return eventId;
}

/** Every message stored in `stream`, in order. */
export async function readStream(jsm: JetStreamManager, stream: string): Promise<StoredMsg[]> {
  const messages: StoredMsg[] = [];
  let seq = 1;
  for (;;) {
    const msg = await jsm.streams.getMessage(stream, {
      seq,
      next_by_subj: ">",
    } as unknown as { seq: number });
    if (msg === null) return messages;
    messages.push(msg);
    seq = msg.seq + 1;
  }
}

/**
 * Deletes the streams of a test namespace (its domain streams and dead letters). Refuses
 * the deployment namespace, whose streams have no prefix: that would be every stream.
 */
export async function deleteNamespaceStreams(
  jsm: JetStreamManager,
  names: EventNames,
): Promise<void> {
  const prefix = names.deadLetterStream.replace(/DEAD_LETTERS$/, "");
  if (prefix === "") throw new Error("refusing to delete the streams of the default namespace");
  for await (const name of jsm.streams.names()) {
    if (name.startsWith(prefix)) await jsm.streams.delete(name);
  }
}

/** Resolves with `check`'s first truthy value; rejects after `timeoutMs`, naming `what`. */
export async function waitFor<T>(
  what: string,
  check: () => T | Promise<T>,
  timeoutMs = 10_000,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value as NonNullable<T>;
    } catch (reason) {
      last = reason;
    }
    if (Date.now() > deadline) {
      const cause = last instanceof Error ? `: ${last.message}` : "";
      throw new Error(`timed out waiting for ${what}${cause}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
