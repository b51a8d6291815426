/**
 * The sidecar configs the mesh benchmark measures: the generated pair as `make up MESH=1`
 * runs it, and variants that each add or take away one piece, so the cost of that piece per
 * request is measured rather than guessed. Every variant except the access log one is a
 * post-processing of the generated JSON bootstrap in the benchmark's temporary copy; the
 * generator (scripts/mesh/sidecar-config.ts) is never changed for a measurement.
 */
import { dropFilters } from "../edge/envoy.js";

/** A parsed Envoy bootstrap. */
export type Bootstrap = Record<string, unknown>;
type Json = Record<string, unknown>;

/** The configs the benchmark can run. */
export type VariantId = "base" | "log" | "no-rbac" | "no-xfcc" | "no-retry" | "plaintext" | "bare";

/** One pair of sidecar configs: the client's (orders) and the server's (catalog). */
export interface Variant {
  id: VariantId;
  /** What differs from the generated configs, for the table. */
  what: string;
  /**
   * The piece of config this variant prices, and whether the variant adds it to the
   * generated configs or takes it away (its cost is then base − variant).
   */
  piece: string;
  effect: "adds" | "removes" | "none";
  /** The planner's `accessLog` option (MESH_ACCESS_LOG=1 in `make up`). */
  accessLog: boolean;
  /** Whether the sidecars still speak mTLS and run RBAC: checked on their counters. */
  mtls: boolean;
  rbac: boolean;
  /**
   * Rewrites the generated bootstraps in place and says what it changed; throws when the
   * piece it removes is not there (a generator change must not silently void a variant).
   */
  rewrite(client: Bootstrap, server: Bootstrap): string[];
}

const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null;

/** Calls `visit` on every object of `node`, depth first (arrays are walked, not visited). */
function eachObject(node: unknown, visit: (o: Json) => void): void {
  if (Array.isArray(node)) {
    for (const item of node) eachObject(item, visit);
    return;
  }
  if (!isObject(node)) return;
  visit(node);
  for (const value of Object.values(node)) eachObject(value, visit);
}

function listeners(config: Bootstrap): Json[] {
  const resources = config.static_resources as { listeners?: Json[] } | undefined;
  return resources?.listeners ?? [];
}

function clusters(config: Bootstrap): Json[] {
  const resources = config.static_resources as { clusters?: Json[] } | undefined;
  return resources?.clusters ?? [];
}

function atLeastOne(count: number, what: string): number {
  if (count === 0) throw new Error(`variant: no ${what} found in the generated config`);
  return count;
}

/** The HTTP connection managers' access_log entries (present only with accessLog: true). */
export function countAccessLogs(config: Bootstrap): number {
  let n = 0;
  eachObject(config, (o) => {
    if (Array.isArray(o.access_log)) n++;
  });
  return n;
}

/** Takes the RBAC HTTP filter out of every listener. */
function removeRbac(config: Bootstrap): number {
  return dropFilters(config, ["envoy.filters.http.rbac"]).length;
}

/**
 * XFCC back to Envoy's default (SANITIZE: drop the header, add nothing): no per-request
 * formatting of the peer certificate's subject, DNS and URI SANs into a header for the app.
 */
function removeXfcc(config: Bootstrap): number {
  let n = 0;
  eachObject(config, (o) => {
    if (o.forward_client_cert_details === undefined) return;
    o.forward_client_cert_details = "SANITIZE";
    delete o.set_current_client_cert_details;
    n++;
  });
  return n;
}

/** Drops every route's retry policy (Envoy keeps a copy of a retriable request's body). */
function removeRetries(config: Bootstrap): number {
  let n = 0;
  eachObject(config, (o) => {
    if (isObject(o.route) && o.route.retry_policy !== undefined) {
      delete o.route.retry_policy;
      n++;
    }
  });
  return n;
}

/**
 * Plaintext between the sidecars: the client's outbound clusters without their TLS
 * transport socket, the server's inbound filter chains without theirs. Without a peer
 * certificate there is no principal, so the RBAC policies' `authenticated` principals
 * become `any` (the method and path permissions are still evaluated per request), and XFCC
 * has no certificate to describe.
 */
function plaintext(client: Bootstrap, server: Bootstrap): string[] {
  let upstream = 0;
  for (const cluster of clusters(client)) {
    if (String(cluster.name).startsWith("outbound|") && cluster.transport_socket !== undefined) {
      delete cluster.transport_socket;
      upstream++;
    }
  }
  let downstream = 0;
  for (const listener of listeners(server)) {
    if (!String(listener.name).startsWith("inbound|")) continue;
    for (const chain of (listener.filter_chains ?? []) as Json[]) {
      if (chain.transport_socket === undefined) continue;
      delete chain.transport_socket;
      downstream++;
    }
  }
  let principals = 0;
  for (const config of [client, server]) {
    eachObject(config, (o) => {
      if (!Array.isArray(o.principals)) return;
      o.principals = o.principals.map(() => ({ any: true }));
      principals++;
    });
  }
  return [
    `TLS removed from ${atLeastOne(upstream, "outbound TLS cluster")} outbound cluster(s) of the client`,
    `TLS removed from ${atLeastOne(downstream, "inbound TLS filter chain")} inbound filter chain(s) of the server`,
    ...(principals === 0
      ? []
      : [`${principals} RBAC policies' principals set to any (no certificate, no principal)`]),
  ];
}

const rbacOff = (client: Bootstrap, server: Bootstrap): string[] => [
  `RBAC filter removed from ${atLeastOne(removeRbac(server), "RBAC filter")} inbound listener(s) of the server` +
    ` (and ${removeRbac(client)} of the client's own, idle, inbound listeners)`,
];
const xfccOff = (client: Bootstrap, server: Bootstrap): string[] => [
  `XFCC set to SANITIZE on ${atLeastOne(removeXfcc(server), "XFCC setting")} inbound HCM(s) of the server` +
    ` (and ${removeXfcc(client)} of the client's)`,
];
const retriesOff = (client: Bootstrap, _server: Bootstrap): string[] => [
  `retry_policy removed from ${atLeastOne(removeRetries(client), "retry policy")} outbound route(s) of the client`,
];

/** Every variant, in the order the rounds run them. */
export const VARIANTS: readonly Variant[] = [
  {
    id: "base",
    what: "as generated (access log off, as make up and Istio default)",
    piece: "the whole sidecar pair",
    effect: "none",
    accessLog: false,
    mtls: true,
    rbac: true,
    rewrite: () => [],
  },
  {
    id: "log",
    what: "access log on (planner accessLog: true), stdout to a file",
    mtls: true,
    rbac: true,
    piece: "access log (JSON line per request)",
    effect: "adds",
    accessLog: true,
    rewrite: (client, server) => [
      `access_log on ${atLeastOne(countAccessLogs(client), "access_log")} client and ${atLeastOne(countAccessLogs(server), "access_log")} server HCMs (generated)`,
    ],
  },
  {
    id: "no-rbac",
    what: "RBAC filter removed",
    piece: "RBAC (inbound, per request)",
    effect: "removes",
    accessLog: false,
    mtls: true,
    rbac: false,
    rewrite: rbacOff,
  },
  {
    id: "no-xfcc",
    what: "XFCC not set (SANITIZE)",
    piece: "XFCC header (peer cert → app)",
    effect: "removes",
    accessLog: false,
    mtls: true,
    rbac: true,
    rewrite: xfccOff,
  },
  {
    id: "no-retry",
    what: "route retry policy removed",
    piece: "retry policy (outbound route)",
    effect: "removes",
    accessLog: false,
    mtls: true,
    rbac: true,
    rewrite: retriesOff,
  },
  {
    id: "plaintext",
    what: "plaintext between the sidecars (no mTLS)",
    piece: "mTLS between the sidecars",
    effect: "removes",
    accessLog: false,
    mtls: false,
    rbac: true,
    rewrite: plaintext,
  },
  {
    id: "bare",
    what: "plaintext, no RBAC, no XFCC, no retries",
    piece: "all four above together",
    effect: "removes",
    accessLog: false,
    mtls: false,
    rbac: false,
    rewrite: (client, server) => [
      ...rbacOff(client, server),
      ...plaintext(client, server),
      ...xfccOff(client, server),
      ...retriesOff(client, server),
    ],
  },
];
