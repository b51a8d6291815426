import type { DescMessage } from "@bufbuild/protobuf";

/** The domains that publish events; each has one stream. */
export const EVENT_DOMAINS = ["identity", "catalog", "inventory", "payments", "orders"] as const;

/** A domain that publishes events. */
export type EventDomain = (typeof EVENT_DOMAINS)[number];

/**
 * Subject and stream names under one namespace. The namespace is `meshmart` in a
 * deployment; a test run picks its own, so its streams and subjects never meet another
 * run's on a shared NATS server.
 */
export interface EventNames {
  readonly namespace: string;
  /** `<namespace>.<domain>.<event_name>` for an event message, e.g. meshmart.orders.order_placed. */
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
    subjectOf: (schema) => `${namespace}.${domainOf(schema)}.${snakeCase(schema.name)}`,
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

function snakeCase(name: string): string {
  return name.replace(/(?<=[a-z0-9])([A-Z])/g, "_$1").toLowerCase();
}
