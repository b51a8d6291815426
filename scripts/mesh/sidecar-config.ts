/**
 * Envoy sidecar configs for the local mesh, translated from the Istio objects the cluster
 * gets (scripts/deploy/manifests.ts, the `istio/*.generated.yaml` generator), the way
 * istiod translates them for istio-proxy: DestinationRule → outbound cluster (mTLS,
 * connection pool, outlier detection), VirtualService → outbound routes (timeouts,
 * retries), AuthorizationPolicy → inbound RBAC, Sidecar egress → which outbound
 * listeners exist, PeerAuthentication STRICT → inbound listeners that take only mTLS.
 * Reading the Istio objects, not the call graph, is what keeps the two outputs equal:
 * a change to a policy reaches both, and a policy shape this translator does not know
 * fails the generation instead of being dropped.
 *
 * What differs from a pod, because one machine has no iptables redirect and one loopback:
 * every listener has its own port (inbound per pod port, outbound per callee and pod
 * port) instead of 15006/15001 and original-destination routing; endpoints are static
 * loopback addresses instead of EDS.
 */
import { any } from "../../edge/envoy/envoy-json.js";
import type { CallGraph } from "../deploy/callgraph.js";
import {
  authorizationPolicies,
  destinationRules,
  type K8sObject,
  sidecars,
  virtualServices,
} from "../deploy/manifests.js";
import { spiffeId } from "./local-ca.js";

/** The Istio objects a sidecar is configured from. */
export interface IstioPolicy {
  namespace: string;
  destinationRules: K8sObject[];
  virtualServices: K8sObject[];
  authorizationPolicies: K8sObject[];
  sidecars: K8sObject[];
}

/** The objects the cluster gets from `graph` (the same functions write istio/). */
export function istioPolicy(graph: CallGraph): IstioPolicy {
  return {
    namespace: graph.namespace,
    destinationRules: destinationRules(graph),
    virtualServices: virtualServices(graph),
    authorizationPolicies: authorizationPolicies(graph),
    sidecars: sidecars(graph),
  };
}

/** A loopback port of this machine. */
type Port = number;

/** One sidecar's place on this machine. */
export interface SidecarPlan {
  /** Workload = service account = `app.kubernetes.io/name` (catalog, edge, …). */
  workload: string;
  /** This instance's name (catalog-0, catalog-1): node id and stats prefix. */
  instance: string;
  adminPort: Port;
  /** The instance's certificate (URI SAN = its SPIFFE id), key and the mesh's root. */
  tls: { certFile: string; keyFile: string; rootFile: string };
  /** Per pod port: where the sidecar takes mTLS and where the app listens in plaintext. */
  inbound: ReadonlyArray<{ podPort: number; listen: Port; app: Port; http2: boolean }>;
  /** The listener the app dials for `service`'s pod port (plaintext, loopback). */
  outbound: ReadonlyArray<{ service: string; podPort: number; listen: Port }>;
  /** The sidecar inbound ports of `service`'s instances for `podPort`. */
  endpoints(service: string, podPort: number): readonly Port[];
  /** One JSON line per request on stdout (Istio's accessLogFile; off by default there too). */
  accessLog?: boolean;
}

const hostOf = (namespace: string, service: string) => `${service}.${namespace}.svc.cluster.local`;

/** Istio's cluster name for a service port: `outbound|<port>||<host>`. */
export const outboundCluster = (namespace: string, service: string, podPort: number): string =>
  `outbound|${podPort}||${hostOf(namespace, service)}`;
/** The cluster of the app behind this sidecar: `inbound|<port>||`. */
export const inboundCluster = (podPort: number): string => `inbound|${podPort}||`;

// ------------------------------------------------------------------ Istio field readers

type Json = Record<string, unknown>;
const spec = (o: K8sObject): Json => (o as unknown as { spec: Json }).spec;
const obj = (v: unknown): Json => (v ?? {}) as Json;

/** "1.666s" → the same Envoy duration; Istio durations are already proto JSON. */
function duration(v: unknown, field: string): string {
  if (typeof v !== "string" || !/^\d+(\.\d+)?s$/.test(v)) {
    throw new Error(`${field}: unsupported duration ${JSON.stringify(v)}`);
  }
  return v;
}

/** Fails on any field the translator does not implement, so nothing is silently dropped. */
function only(o: Json, allowed: readonly string[], where: string): void {
  for (const key of Object.keys(o)) {
    if (!allowed.includes(key)) throw new Error(`${where}: ${key} is not translated`);
  }
}

function byName(objects: K8sObject[], name: string, kind: string): Json {
  const found = objects.find((o) => o.metadata.name === name);
  if (found === undefined) throw new Error(`no ${kind} ${name}`);
  return spec(found);
}

/**
 * The traffic policy that applies to `podPort` of `service`: Istio's merge, where a
 * port-level setting replaces the destination-level field of the same name as a whole
 * (a port-level connectionPool does not inherit the top-level one's limits).
 */
export function trafficPolicyFor(policy: IstioPolicy, service: string, podPort: number): Json {
  const dr = byName(policy.destinationRules, service, "DestinationRule");
  const top = obj(dr.trafficPolicy);
  only(top, ["tls", "connectionPool", "outlierDetection", "portLevelSettings"], `DR ${service}`);
  const merged: Json = { ...top };
  delete merged.portLevelSettings;
  for (const level of (top.portLevelSettings ?? []) as Json[]) {
    if (obj(level.port).number !== podPort) continue;
    for (const [key, value] of Object.entries(level)) if (key !== "port") merged[key] = value;
  }
  return merged;
}

// ------------------------------------------------------------------ clusters

const MAX_UINT32 = 4_294_967_295;

/** An outbound cluster: a DestinationRule's traffic policy for one service port. */
export function outboundClusterConfig(
  policy: IstioPolicy,
  plan: SidecarPlan,
  service: string,
  podPort: number,
): Json {
  const tp = trafficPolicyFor(policy, service, podPort);
  if (obj(tp.tls).mode !== "ISTIO_MUTUAL") {
    throw new Error(`DR ${service}: only tls.mode ISTIO_MUTUAL is translated`);
  }
  const pool = obj(tp.connectionPool);
  only(pool, ["tcp", "http"], `DR ${service} connectionPool`);
  const tcp = obj(pool.tcp);
  only(tcp, ["maxConnections", "connectTimeout"], `DR ${service} tcp`);
  const http = obj(pool.http);
  only(
    http,
    [
      "http2MaxRequests",
      "http1MaxPendingRequests",
      "maxRequestsPerConnection",
      "idleTimeout",
      "h2UpgradePolicy",
    ],
    `DR ${service} http`,
  );
  const outlier = obj(tp.outlierDetection);
  only(
    outlier,
    [
      "consecutive5xxErrors",
      "consecutiveGatewayErrors",
      "interval",
      "baseEjectionTime",
      "maxEjectionPercent",
    ],
    `DR ${service} outlierDetection`,
  );
  const http2 = http.h2UpgradePolicy === "UPGRADE";
  const perConnection = Number(http.maxRequestsPerConnection ?? 0);
  const name = outboundCluster(policy.namespace, service, podPort);
  return {
    name,
    type: "STATIC",
    // Istio's defaults where the rule says nothing: 10 s connect, limits at their maximum.
    connect_timeout:
      tcp.connectTimeout === undefined ? "10s" : duration(tcp.connectTimeout, "connectTimeout"),
    lb_policy: "LEAST_REQUEST",
    load_assignment: {
      cluster_name: name,
      endpoints: [
        {
          lb_endpoints: plan.endpoints(service, podPort).map((port) => ({
            endpoint: { address: { socket_address: { address: "127.0.0.1", port_value: port } } },
          })),
        },
      ],
    },
    circuit_breakers: {
      thresholds: [
        {
          max_connections: Number(tcp.maxConnections ?? MAX_UINT32),
          max_pending_requests: Number(http.http1MaxPendingRequests ?? MAX_UINT32),
          max_requests: Number(http.http2MaxRequests ?? MAX_UINT32),
          max_retries: MAX_UINT32,
        },
      ],
    },
    typed_extension_protocol_options: {
      "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": any(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        {
          common_http_protocol_options: {
            ...(http.idleTimeout === undefined
              ? {}
              : { idle_timeout: duration(http.idleTimeout, "idleTimeout") }),
            ...(perConnection > 0 ? { max_requests_per_connection: perConnection } : {}),
          },
          explicit_http_config: http2
            ? { http2_protocol_options: {} }
            : { http_protocol_options: {} },
        },
      ),
    },
    ...(Object.keys(outlier).length === 0
      ? {}
      : {
          outlier_detection: {
            ...(outlier.consecutive5xxErrors === undefined
              ? {}
              : {
                  consecutive_5xx: outlier.consecutive5xxErrors,
                  enforcing_consecutive_5xx: 100,
                }),
            ...(outlier.consecutiveGatewayErrors === undefined
              ? {}
              : {
                  consecutive_gateway_failure: outlier.consecutiveGatewayErrors,
                  enforcing_consecutive_gateway_failure: 100,
                }),
            ...(outlier.interval === undefined
              ? {}
              : { interval: duration(outlier.interval, "interval") }),
            ...(outlier.baseEjectionTime === undefined
              ? {}
              : { base_ejection_time: duration(outlier.baseEjectionTime, "baseEjectionTime") }),
            ...(outlier.maxEjectionPercent === undefined
              ? {}
              : { max_ejection_percent: outlier.maxEjectionPercent }),
            enforcing_success_rate: 0,
          },
        }),
    transport_socket: {
      name: "envoy.transport_sockets.tls",
      typed_config: any("envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", {
        sni: `outbound_.${podPort}_._.${hostOf(policy.namespace, service)}`,
        common_tls_context: {
          ...certificates(plan),
          alpn_protocols: [http2 ? "h2" : "http/1.1"],
          validation_context: {
            trusted_ca: { filename: plan.tls.rootFile },
            // ISTIO_MUTUAL: the server must be the destination's service account.
            match_typed_subject_alt_names: [
              { san_type: "URI", matcher: { exact: spiffeId(policy.namespace, service) } },
            ],
          },
        },
      }),
    },
  };
}

function certificates(plan: SidecarPlan): Json {
  return {
    // Istio's mesh mTLS range; Envoy's client default would stop at 1.2.
    tls_params: {
      tls_minimum_protocol_version: "TLSv1_2",
      tls_maximum_protocol_version: "TLSv1_3",
    },
    tls_certificates: [
      {
        certificate_chain: { filename: plan.tls.certFile },
        private_key: { filename: plan.tls.keyFile },
      },
    ],
  };
}

/** The plaintext cluster of the app behind the sidecar. */
function inboundClusterConfig(podPort: number, app: Port, http2: boolean): Json {
  const name = inboundCluster(podPort);
  return {
    name,
    type: "STATIC",
    connect_timeout: "10s",
    load_assignment: {
      cluster_name: name,
      endpoints: [
        {
          lb_endpoints: [
            {
              endpoint: { address: { socket_address: { address: "127.0.0.1", port_value: app } } },
            },
          ],
        },
      ],
    },
    // Istio sets no limits between a sidecar and its own app.
    circuit_breakers: {
      thresholds: [
        {
          max_connections: MAX_UINT32,
          max_pending_requests: MAX_UINT32,
          max_requests: MAX_UINT32,
          max_retries: MAX_UINT32,
        },
      ],
    },
    typed_extension_protocol_options: {
      "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": any(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        {
          explicit_http_config: http2
            ? { http2_protocol_options: {} }
            : { http_protocol_options: {} },
        },
      ),
    },
  };
}

// ------------------------------------------------------------------ outbound routes

/** Envoy route matches for one Istio HTTPMatchRequest on `podPort` (none when another port). */
function routeMatch(match: Json, podPort: number, where: string): Json | undefined {
  only(match, ["port", "uri", "method"], `${where} match`);
  if (match.port !== undefined && match.port !== podPort) return undefined;
  const uri = obj(match.uri);
  only(uri, ["exact", "prefix", "regex"], `${where} uri`);
  const path =
    uri.exact !== undefined
      ? { path: uri.exact }
      : uri.prefix !== undefined
        ? { prefix: uri.prefix }
        : uri.regex !== undefined
          ? { safe_regex: { regex: uri.regex } }
          : { prefix: "/" };
  const method = obj(match.method);
  only(method, ["exact"], `${where} method`);
  return {
    ...path,
    ...(method.exact === undefined
      ? {}
      : { headers: [{ name: ":method", string_match: { exact: method.exact } }] }),
  };
}

/**
 * The retry policy of an Istio HTTPRetry: none for attempts 0; else the attempts, the
 * per-try timeout, the conditions, and a retry that avoids the host that just failed.
 */
export function retryPolicy(retries: Json, where: string): Json | undefined {
  only(retries, ["attempts", "perTryTimeout", "retryOn"], `${where} retries`);
  const attempts = Number(retries.attempts ?? 0);
  if (attempts === 0) return undefined;
  return {
    retry_on: retries.retryOn,
    num_retries: attempts,
    ...(retries.perTryTimeout === undefined
      ? {}
      : { per_try_timeout: duration(retries.perTryTimeout, "perTryTimeout") }),
    retry_host_predicate: [
      {
        name: "envoy.retry_host_predicates.previous_hosts",
        typed_config: any(
          "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate",
          {},
        ),
      },
    ],
    host_selection_retry_max_attempts: 5,
  };
}

/** The routes of `service`'s VirtualService that apply on `podPort`, in its order. */
export function outboundRoutes(policy: IstioPolicy, service: string, podPort: number): Json[] {
  const vs = byName(policy.virtualServices, service, "VirtualService");
  const routes: Json[] = [];
  for (const http of (vs.http ?? []) as Json[]) {
    const where = `VS ${service} ${String(http.name)}`;
    only(http, ["name", "match", "timeout", "retries", "route"], where);
    const destinations = (http.route ?? []) as Json[];
    const destination = obj(destinations[0]?.destination);
    if (destinations.length !== 1 || destination.host !== hostOf(policy.namespace, service)) {
      throw new Error(`${where}: only one destination, the service itself, is translated`);
    }
    const toPort = Number(obj(destination.port).number ?? podPort);
    const matches = ((http.match as Json[] | undefined) ?? [{}])
      .map((m) => routeMatch(m, podPort, where))
      .filter((m) => m !== undefined);
    const timeout = http.timeout === undefined ? "0s" : duration(http.timeout, "timeout");
    const retry = retryPolicy(obj(http.retries), where);
    for (const match of matches) {
      routes.push({
        name: String(http.name),
        match,
        route: {
          cluster: outboundCluster(policy.namespace, service, toPort),
          timeout,
          // What istiod means by its (deprecated) max_grpc_timeout: a caller's grpc-timeout
          // applies, capped at the route's timeout, and a call without one gets the route's.
          // grpc_timeout_header_max alone would leave a call without the header unbounded
          // (measured: a hung RefreshToken never ended), hence max_stream_duration too.
          max_stream_duration: { max_stream_duration: timeout, grpc_timeout_header_max: timeout },
          ...(retry === undefined ? {} : { retry_policy: retry }),
        },
      });
    }
  }
  return routes;
}

// ------------------------------------------------------------------ inbound RBAC

/** The ALLOW policies that select `workload` (namespace-wide ones included). */
function policiesFor(policy: IstioPolicy, workload: string): K8sObject[] {
  return policy.authorizationPolicies.filter((p) => {
    const selector = obj(obj(spec(p).selector).matchLabels);
    return Object.keys(selector).length === 0 || selector["app.kubernetes.io/name"] === workload;
  });
}

function principalMatcher(source: Json, where: string): Json[] {
  only(source, ["principals", "namespaces"], `${where} source`);
  const out: Json[] = [];
  for (const p of (source.principals ?? []) as string[]) {
    out.push({ authenticated: { principal_name: { exact: `spiffe://${p}` } } });
  }
  for (const ns of (source.namespaces ?? []) as string[]) {
    out.push({
      authenticated: {
        principal_name: { safe_regex: { regex: `^spiffe://[^/]+/ns/${ns}/sa/[^/]+$` } },
      },
    });
  }
  return out;
}

/**
 * One Istio operation as an Envoy permission on the listener of `podPort`, or undefined
 * when it names other ports only (that listener never sees those). Ports are decided
 * here because the local listeners do not sit on the pod port numbers.
 */
function operationPermission(operation: Json, podPort: number, where: string): Json | undefined {
  only(operation, ["ports", "methods", "paths"], `${where} operation`);
  const ports = (operation.ports ?? []) as string[];
  if (ports.length > 0 && !ports.includes(String(podPort))) return undefined;
  const rules: Json[] = [];
  const methods = (operation.methods ?? []) as string[];
  if (methods.length > 0) {
    rules.push({
      or_rules: {
        rules: methods.map((m) => ({ header: { name: ":method", string_match: { exact: m } } })),
      },
    });
  }
  const paths = (operation.paths ?? []) as string[];
  if (paths.length > 0) {
    // url_path: the path without its query, as Istio matches `paths`.
    rules.push({
      or_rules: { rules: paths.map((p) => ({ url_path: { path: { exact: p } } })) },
    });
  }
  return rules.length === 0 ? { any: true } : { and_rules: { rules } };
}

/**
 * The RBAC filter of the inbound listener for `podPort`: ALLOW with one policy per rule
 * (named as istiod names them), so anything no rule allows is denied with 403, which a
 * gRPC caller sees as PERMISSION_DENIED. A namespace's rule-less ALLOW policy (deny by
 * default) adds no policy but keeps the filter on for every workload.
 */
export function inboundRbac(policy: IstioPolicy, workload: string, podPort: number): Json {
  const policies: Record<string, Json> = {};
  for (const ap of policiesFor(policy, workload)) {
    const s = spec(ap);
    only(s, ["selector", "action", "rules"], `AP ${ap.metadata.name}`);
    if (s.action !== undefined && s.action !== "ALLOW") {
      throw new Error(`AP ${ap.metadata.name}: only ALLOW is translated`);
    }
    ((s.rules ?? []) as Json[]).forEach((rule, index) => {
      const where = `AP ${ap.metadata.name} rule ${index}`;
      only(rule, ["from", "to"], where);
      const principals = ((rule.from ?? []) as Json[]).flatMap((f) => {
        only(f, ["source"], where);
        return principalMatcher(obj(f.source), where);
      });
      const operations = (rule.to as Json[] | undefined) ?? [{ operation: {} }];
      const permissions = operations
        .map((t) => {
          only(t, ["operation"], where);
          return operationPermission(obj(t.operation), podPort, where);
        })
        .filter((p) => p !== undefined);
      if (permissions.length === 0) return;
      policies[`ns[${ap.metadata.namespace}]-policy[${ap.metadata.name}]-rule[${index}]`] = {
        permissions,
        principals: principals.length === 0 ? [{ any: true }] : principals,
      };
    });
  }
  return {
    name: "envoy.filters.http.rbac",
    typed_config: any("envoy.extensions.filters.http.rbac.v3.RBAC", {
      rules: { action: "ALLOW", policies },
    }),
  };
}

// ------------------------------------------------------------------ listeners

const ACCESS_LOG = {
  name: "envoy.access_loggers.stdout",
  typed_config: any("envoy.extensions.access_loggers.stream.v3.StdoutAccessLog", {
    log_format: {
      json_format: {
        time: "%START_TIME%",
        direction: "%ROUTE_NAME%",
        path: "%REQ(:PATH)%",
        status: "%RESPONSE_CODE%",
        grpc_status: "%GRPC_STATUS%",
        response_flags: "%RESPONSE_FLAGS%",
        duration_ms: "%DURATION%",
        upstream: "%UPSTREAM_HOST%",
        upstream_cluster: "%UPSTREAM_CLUSTER%",
        peer: "%DOWNSTREAM_PEER_URI_SAN%",
        attempts: "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
        request_id: "%REQ(X-REQUEST-ID)%",
      },
    },
  }),
};

const router = {
  name: "envoy.filters.http.router",
  typed_config: any("envoy.extensions.filters.http.router.v3.Router", {}),
};

function hcm(
  statPrefix: string,
  filters: Json[],
  routeConfig: Json,
  plan: SidecarPlan,
  extra: Json = {},
): Json {
  return {
    name: "envoy.filters.network.http_connection_manager",
    typed_config: any(
      "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
      {
        stat_prefix: statPrefix,
        codec_type: "AUTO",
        // Istio's sidecar defaults: streams bounded by the route, not by the connection.
        stream_idle_timeout: "0s",
        normalize_path: true,
        merge_slashes: true,
        path_with_escaped_slashes_action: "KEEP_UNCHANGED",
        use_remote_address: false,
        http_filters: [...filters, router],
        route_config: routeConfig,
        ...(plan.accessLog === true ? { access_log: [ACCESS_LOG] } : {}),
        ...extra,
      },
    ),
  };
}

function listenerAddress(port: Port): Json {
  return { socket_address: { address: "127.0.0.1", port_value: port } };
}

/** Inbound: mTLS only (PeerAuthentication STRICT), RBAC, then the app. */
function inboundListener(policy: IstioPolicy, plan: SidecarPlan, podPort: number, listen: Port) {
  return {
    name: `inbound|${podPort}`,
    address: listenerAddress(listen),
    filter_chains: [
      {
        transport_socket: {
          name: "envoy.transport_sockets.tls",
          typed_config: any("envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext", {
            require_client_certificate: true,
            common_tls_context: {
              ...certificates(plan),
              alpn_protocols: ["h2", "http/1.1"],
              // Any workload of the mesh may connect; RBAC decides what it may call.
              validation_context: { trusted_ca: { filename: plan.tls.rootFile } },
            },
          }),
        },
        filters: [
          hcm(
            `inbound_${podPort}`,
            [inboundRbac(policy, plan.workload, podPort)],
            {
              name: `inbound|${podPort}`,
              validate_clusters: false,
              virtual_hosts: [
                {
                  name: `inbound|http|${podPort}`,
                  domains: ["*"],
                  routes: [
                    {
                      name: "default",
                      match: { prefix: "/" },
                      // The caller's sidecar owns timeouts; inbound only forwards.
                      route: {
                        cluster: inboundCluster(podPort),
                        timeout: "0s",
                        // 0: the caller's grpc-timeout as it came, none without it.
                        max_stream_duration: { grpc_timeout_header_max: "0s" },
                      },
                    },
                  ],
                },
              ],
            },
            plan,
            // As istio-proxy: the app learns its caller's identity from the peer certificate,
            // appended after whatever the caller sent (payments trusts only the last element).
            {
              forward_client_cert_details: "APPEND_FORWARD",
              set_current_client_cert_details: { subject: true, dns: true, uri: true },
            },
          ),
        ],
      },
    ],
  };
}

/** Outbound: the app's plaintext calls to one service port, routed by its VirtualService. */
function outboundListener(
  policy: IstioPolicy,
  service: string,
  podPort: number,
  listen: Port,
  plan: SidecarPlan,
) {
  return {
    name: `outbound|${podPort}||${hostOf(policy.namespace, service)}`,
    address: listenerAddress(listen),
    filter_chains: [
      {
        filters: [
          hcm(
            `outbound_${service}_${podPort}`,
            [],
            {
              name: `${hostOf(policy.namespace, service)}:${podPort}`,
              validate_clusters: false,
              virtual_hosts: [
                {
                  name: `${hostOf(policy.namespace, service)}:${podPort}`,
                  domains: ["*"],
                  routes: outboundRoutes(policy, service, podPort),
                },
              ],
            },
            plan,
          ),
        ],
      },
    ],
  };
}

/**
 * The services a workload's Sidecar egress lets it reach in its own namespace (`./host`).
 * The data stores (`meshmart-data/…`) and istio-system are not meshed locally.
 */
export function egressServices(policy: IstioPolicy, workload: string): string[] {
  const sidecar =
    policy.sidecars.find((s) => s.metadata.name === workload) ??
    policy.sidecars.find((s) => s.metadata.name === "default");
  if (sidecar === undefined) throw new Error(`no Sidecar for ${workload}`);
  const suffix = `.${policy.namespace}.svc.cluster.local`;
  const hosts = ((spec(sidecar).egress ?? []) as Json[]).flatMap(
    (e) => (e.hosts ?? []) as string[],
  );
  return hosts
    .filter((h) => h.startsWith("./") && h.endsWith(suffix))
    .map((h) => h.slice(2, -suffix.length));
}

/** The whole bootstrap of one sidecar. */
export function sidecarBootstrap(policy: IstioPolicy, plan: SidecarPlan): Json {
  const reachable = new Set(egressServices(policy, plan.workload));
  for (const o of plan.outbound) {
    if (!reachable.has(o.service)) {
      throw new Error(`${plan.workload}'s Sidecar egress does not include ${o.service}`);
    }
  }
  const clusters = new Map<string, Json>();
  for (const o of plan.outbound) {
    for (const route of outboundRoutes(policy, o.service, o.podPort)) {
      const cluster = String(obj(route.route).cluster);
      if (clusters.has(cluster)) continue;
      const port = Number(cluster.split("|")[1]);
      clusters.set(cluster, outboundClusterConfig(policy, plan, o.service, port));
    }
  }
  return {
    node: {
      id: `sidecar~127.0.0.1~${plan.instance}.${policy.namespace}~${policy.namespace}.svc.cluster.local`,
      cluster: `${plan.workload}.${policy.namespace}`,
    },
    admin: { address: listenerAddress(plan.adminPort) },
    // Cluster names hold dots (…svc.cluster.local): Envoy's default tag would cut them at
    // the first one. Istio's bootstrap extracts them whole, as the label `cluster_name`;
    // the mesh's alert rules and dashboards are written against that.
    stats_config: {
      stats_tags: [
        {
          tag_name: "cluster_name",
          regex: "^cluster\\.((.+?(\\..+?\\.svc\\.cluster\\.local)?)\\.)",
        },
      ],
    },
    static_resources: {
      listeners: [
        ...plan.inbound.map((i) => inboundListener(policy, plan, i.podPort, i.listen)),
        ...plan.outbound.map((o) => outboundListener(policy, o.service, o.podPort, o.listen, plan)),
      ],
      clusters: [
        ...plan.inbound.map((i) => inboundClusterConfig(i.podPort, i.app, i.http2)),
        ...clusters.values(),
      ],
    },
  };
}
