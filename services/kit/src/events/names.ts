import type { DescMessage } from "@bufbuild/protobuf";

/** The domains that publish events; each has one stream. */
export const EVENT_DOMAINS = [
  "identity",
  "catalog",
  "inventory",
  "payments",
  "orders",
  "notifications",
] as const;

/** A domain that publishes events. */
export type EventDomain = (typeof EVENT_DOMAINS)[number];

/**
 * Subject and stream names under one namespace. The namespace is `meshmart` in a
 * deployment; a test run picks its own, so its streams and subjects never meet another
 * run's on a shared NATS server.
 */
export interface EventNames {
  readonly namespace: string;
  /** `<namespace>.<subject in the proto>` for an event message, e.g. meshmart.orders.order.placed. */
  subjectOf(schema: DescMessage): string;
  /** The stream holding a domain's events: ORDERS, or T1A2B_ORDERS under namespace t1a2b. */
  stream(domain: EventDomain): string;
  /** The subjects a domain's stream captures: `<namespace>.<domain>.>`. */
  streamSubjects(domain: EventDomain): string[];
  /** The stream of messages every consumer gave up on. */
  readonly deadLetterStream: string;
  /** Where a consumer's dead letters go: `<namespace>.deadletter.<consumer>`. */
  deadLetterSubject(consumer: string): string;
}

const NAMESPACE = /^[a-z][a-z0-9_]{0,31}$/;

/** Event names under `namespace` (default `meshmart`). */
export function createEventNames(namespace = "meshmart"): EventNames {
  if (!NAMESPACE.test(namespace)) {
    throw new Error(`event namespace must match ${NAMESPACE}; got ${JSON.stringify(namespace)}`);
  }
  const streamPrefix = namespace === "meshmart" ? "" : `${namespace.toUpperCase()}_`;
  return {
    namespace,
    subjectOf: (schema) => `${namespace}.${subjectSuffix(schema)}`,
    stream: (domain) => `${streamPrefix}${domain.toUpperCase()}`,
    streamSubjects: (domain) => [`${namespace}.${domain}.>`],
    deadLetterStream: `${streamPrefix}DEAD_LETTERS`,
    deadLetterSubject: (consumer) => `${namespace}.deadletter.${consumer}`,
  };
}

/** The publishing domain of an event message, from its package `meshmart.<domain>.v1`. */
export function domainOf(schema: DescMessage): EventDomain {
  const domain = schema.typeName.split(".")[1];
  const known = EVENT_DOMAINS.find((d) => d === domain);
  if (known === undefined) {
    throw new Error(`${schema.typeName} is not in a publishing domain's package`);
  }
  return known;
}

/**
 * Each event's subject, as its proto comment documents it. Listed rather than derived
 * from the message name because the names don't follow one pattern (StockLevelChanged is
 * inventory.stock.changed); a test checks that every event message in proto/ is here.
 */
export const EVENT_SUBJECTS: Readonly<Record<string, string>> = {
  "meshmart.identity.v1.UserSignedUp": "identity.user.signed_up",
  "meshmart.identity.v1.UserRoleGranted": "identity.user.role_granted",
  "meshmart.catalog.v1.ProductCreated": "catalog.product.created",
  "meshmart.catalog.v1.ProductUpdated": "catalog.product.updated",
  "meshmart.catalog.v1.ProductDeleted": "catalog.product.deleted",
  "meshmart.inventory.v1.StockReserved": "inventory.reservation.reserved",
  "meshmart.inventory.v1.StockReleased": "inventory.reservation.released",
  "meshmart.inventory.v1.StockCommitted": "inventory.reservation.committed",
  "meshmart.inventory.v1.StockLevelChanged": "inventory.stock.changed",
  "meshmart.payments.v1.PaymentAuthorized": "payments.payment.authorized",
  "meshmart.payments.v1.PaymentCaptured": "payments.payment.captured",
  "meshmart.payments.v1.PaymentVoided": "payments.payment.voided",
  "meshmart.payments.v1.PaymentRefunded": "payments.payment.refunded",
  "meshmart.payments.v1.PaymentFailed": "payments.payment.failed",
  "meshmart.orders.v1.OrderPlaced": "orders.order.placed",
  "meshmart.orders.v1.OrderConfirmed": "orders.order.confirmed",
  "meshmart.orders.v1.OrderCancelled": "orders.order.cancelled",
  "meshmart.notifications.v1.NotificationSent": "notifications.notification.sent",
};

function subjectSuffix(schema: DescMessage): string {
  const suffix = EVENT_SUBJECTS[schema.typeName];
  if (suffix === undefined) throw new Error(`${schema.typeName} is not a known event message`);
  domainOf(schema);
  return suffix;
}
