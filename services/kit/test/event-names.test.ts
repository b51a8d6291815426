import assert from "node:assert/strict";
import { test } from "node:test";
import type { DescFile } from "@bufbuild/protobuf";
import { file_meshmart_catalog_v1_events } from "../gen/meshmart/catalog/v1/events_pb.js";
import { file_meshmart_identity_v1_events } from "../gen/meshmart/identity/v1/events_pb.js";
import { file_meshmart_inventory_v1_events } from "../gen/meshmart/inventory/v1/events_pb.js";
import { file_meshmart_notifications_v1_events } from "../gen/meshmart/notifications/v1/events_pb.js";
import { file_meshmart_orders_v1_events } from "../gen/meshmart/orders/v1/events_pb.js";
import { file_meshmart_payments_v1_events } from "../gen/meshmart/payments/v1/events_pb.js";
import { createEventNames, EVENT_SUBJECTS } from "../src/events/names.js";

const eventFiles: DescFile[] = [
  file_meshmart_identity_v1_events,
  file_meshmart_catalog_v1_events,
  file_meshmart_inventory_v1_events,
  file_meshmart_payments_v1_events,
  file_meshmart_orders_v1_events,
  file_meshmart_notifications_v1_events,
];
const eventMessages = eventFiles.flatMap((f) => f.messages);

test("every event message in proto/ has a subject inside its domain's stream", () => {
  const names = createEventNames();
  assert.equal(eventMessages.length, Object.keys(EVENT_SUBJECTS).length);
  for (const schema of eventMessages) {
    const subject = names.subjectOf(schema);
    const domain = schema.typeName.split(".")[1];
    assert.ok(subject.startsWith(`meshmart.${domain}.`), `${schema.typeName} → ${subject}`);
  }
  const subjects = eventMessages.map((s) => names.subjectOf(s));
  assert.equal(new Set(subjects).size, subjects.length, "two events share a subject");
});

test("every event starts with event_id and occurred_at, the fields the outbox relies on", () => {
  for (const schema of eventMessages) {
    assert.equal(schema.field.eventId?.number, 1, schema.typeName);
    assert.equal(schema.field.occurredAt?.number, 2, schema.typeName);
  }
});

test("a test namespace gets its own subjects and streams", () => {
  const names = createEventNames("t1a2b");
  const [placed] = file_meshmart_orders_v1_events.messages;
  assert.ok(placed);
  assert.equal(names.subjectOf(placed), "t1a2b.orders.order.placed");
  assert.equal(names.stream("orders"), "T1A2B_ORDERS");
  assert.deepEqual(names.streamSubjects("orders"), ["t1a2b.orders.>"]);
  assert.equal(names.deadLetterSubject("notifications"), "t1a2b.deadletter.notifications");
  assert.equal(createEventNames().stream("orders"), "ORDERS");
  assert.throws(() => createEventNames("Bad.Name"), /namespace/);
});
