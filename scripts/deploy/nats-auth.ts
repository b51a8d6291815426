/**
 * NATS users and subject permissions from deploy/callgraph.yaml: each service may publish
 * only the event subjects the graph says it publishes, read (through JetStream consumers)
 * only the streams it consumes, and manage only the streams and consumers those need. A
 * compromised notifications pod cannot forge payments.payment.captured, delete ORDERS, or
 * read identity events it was never meant to see. Passwords stay out of the file: each is
 * an environment variable of the NATS server, set from a Secret.
 */
import { createEventNames, type EventDomain, type EventNames } from "@meshmart/kit";
import type { CallGraph, GraphService } from "./callgraph.js";

/** What one NATS user may do. */
export interface NatsPermissions {
  publish: string[];
  subscribe: string[];
}

/** The operations user (streams, dead-letter replays); allowed everything. */
export const NATS_OPS_USER = "ops";

/** The server's environment variable holding `user`'s password. */
export function natsPasswordVariable(user: string): string {
  return `NATS_PASSWORD_${user.toUpperCase()}`;
}

/** Options for {@link natsPermissions}. */
export interface NatsAuthOptions {
  /** EVENTS_NAMESPACE the services run with (deployments: meshmart). */
  namespace?: string;
  /** Also grant what local runs consume (`localOnlyConsumes`); the cluster leaves it off. */
  includeLocalOnly?: boolean;
}

/** Each service that uses NATS, and its permissions. */
export function natsPermissions(
  graph: CallGraph,
  options: NatsAuthOptions = {},
): Map<string, NatsPermissions> {
  const names = createEventNames(options.namespace);
  const out = new Map<string, NatsPermissions>();
  for (const svc of graph.services.values()) {
    if (!svc.uses.includes("nats")) continue;
    out.set(svc.name, permissionsOf(svc, names, options.includeLocalOnly === true));
  }
  return out;
}

function permissionsOf(svc: GraphService, names: EventNames, localOnly: boolean): NatsPermissions {
  const consumes = [...svc.consumes, ...(localOnly ? svc.localOnlyConsumes : [])];
  const published = domainsOf(svc.publishes);
  const consumed = domainsOf(consumes);
  // openServiceEvents ensures the streams it publishes to and the dead-letter stream; a
  // consumer ensures the streams it reads.
  const streams = [
    ...new Set([...published, ...consumed].map((d) => names.stream(d))),
    names.deadLetterStream,
  ];
  const consumedStreams = consumed.map((d) => names.stream(d));
  return {
    publish: [
      ...svc.publishes.map((subject) => `${names.namespace}.${subject}`),
      ...(consumed.length > 0 ? [names.deadLetterSubject(">")] : []),
      "$JS.API.INFO",
      ...streams.flatMap((s) => [
        `$JS.API.STREAM.INFO.${s}`,
        `$JS.API.STREAM.CREATE.${s}`,
        `$JS.API.STREAM.UPDATE.${s}`,
      ]),
      ...consumedStreams.flatMap((s) => [
        `$JS.API.CONSUMER.CREATE.${s}`,
        `$JS.API.CONSUMER.CREATE.${s}.>`,
        `$JS.API.CONSUMER.DURABLE.CREATE.${s}.>`,
        `$JS.API.CONSUMER.INFO.${s}.>`,
        `$JS.API.CONSUMER.MSG.NEXT.${s}.>`,
        `$JS.ACK.${s}.>`,
      ]),
    ],
    subscribe: [
      // Replies: JetStream API answers, publish acks, pulled messages.
      "_INBOX.>",
      // Its own events as they are published (orders wakes WatchOrder on every replica).
      ...published.map((d) => `${names.namespace}.${d}.>`),
    ],
  };
}

/**
 * Whether NATS subject `pattern` matches `subject`: `*` is one token, a final `>` one or
 * more. The graph's publishes/consumes are such patterns, since they become permissions.
 */
export function subjectMatches(pattern: string, subject: string): boolean {
  const want = pattern.split(".");
  const have = subject.split(".");
  for (let i = 0; i < want.length; i++) {
    const token = want[i];
    if (token === ">") return i === want.length - 1 && have.length > i;
    if (i >= have.length || (token !== "*" && token !== have[i])) return false;
  }
  return want.length === have.length;
}

/** The event domains of subject patterns such as `orders.order.*`. */
function domainsOf(subjects: readonly string[]): EventDomain[] {
  return [...new Set(subjects.map((s) => s.split(".")[0] as EventDomain))];
}

/**
 * The `authorization` block for nats.conf (included by it): one user per service with its
 * permissions, plus {@link NATS_OPS_USER}; each password is `$NATS_PASSWORD_<USER>`.
 */
export function natsAuthConf(graph: CallGraph, options: NatsAuthOptions = {}): string {
  const lines = [
    "# Generated from deploy/callgraph.yaml by scripts/deploy/generate.ts; do not edit.",
    "authorization {",
    "  users = [",
  ];
  const quoted = (list: readonly string[]) => list.map((s) => JSON.stringify(s)).join(", ");
  for (const [user, permissions] of natsPermissions(graph, options)) {
    lines.push(
      `    { user: ${JSON.stringify(user)}, password: $${natsPasswordVariable(user)}, permissions: {`,
      `        publish: { allow: [${quoted(permissions.publish)}] }`,
      `        subscribe: { allow: [${quoted(permissions.subscribe)}] }`,
      "    } }",
    );
  }
  lines.push(
    `    { user: ${JSON.stringify(NATS_OPS_USER)}, password: $${natsPasswordVariable(NATS_OPS_USER)} }`,
    "  ]",
    "}",
    "",
  );
  return lines.join("\n");
}
