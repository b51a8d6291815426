// The event layer beyond names and the outbox writer (re-exported by the kit's index):
// config, NATS connection, streams, relay, consumers, dead letters, service wiring.
export { type EventsConfig, eventConfigFields } from "./config.js";
export {
  createEventConsumer,
  type EventConsumer,
  type EventConsumerOptions,
  type EventHandler,
  type EventMeta,
  onEvent,
} from "./consumer.js";
export {
  type DeadLetter,
  type DeadLetterFilter,
  listDeadLetters,
  type ReplayResult,
  replayAllDeadLetters,
  replayDeadLetter,
} from "./dead-letters.js";
export { EventHeaders, PROTOBUF_CONTENT_TYPE } from "./headers.js";
export { type ConnectNatsOptions, connectNats, natsCheck } from "./nats.js";
export { type OutboxInsertRow, outboxRows } from "./outbox.js";
export { createOutboxRelay, type OutboxRelay, type OutboxRelayOptions } from "./relay.js";
export {
  type ConsumeOptions,
  openServiceEvents,
  type ServiceEvents,
  type ServiceEventsOptions,
} from "./service-events.js";
export { ensureStreams, type StreamSettings } from "./streams.js";
