/**
 * Generates the Envoy edge's static bootstrap from the meshmart descriptor set, so the REST
 * surface Envoy transcodes is exactly what proto/ declares. Two targets, one function:
 *
 *  - the cluster (`edge/envoy/envoy.yaml`, committed, what the `edge` image runs);
 *  - local (`make up`, every test): the same config with other upstream addresses, ports and
 *    file paths (see local.ts), written under .data/ and never committed.
 *
 *   node_modules/.bin/buf build --as-file-descriptor-set -o .build/meshmart.binpb
 *   node --import tsx edge/envoy/generate.ts [--descriptor .build/meshmart.binpb] [--out edge/envoy/envoy.yaml] [--check]
 *
 * --check exits 1 if the committed file differs from what would be generated (CI staleness).
 *
 * Ports (decided here, documented in the yaml header): inside pods every service listens on
 * grpc 9000 (h2c; Istio's sidecar adds mTLS), http 9001 (Connect/gRPC-Web/JSON, HTTP/1.1; serves
 * identity's /.well-known/jwks.json) and admin 9002 (metrics). Kubernetes Services are
 * `<name>.meshmart.svc.cluster.local`; the storefront's static files come from the
 * `storefront` Service on 8080. Envoy listens on 8080, its admin on 127.0.0.1:9901.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { type DescService, type FileRegistry, hasOption } from "@bufbuild/protobuf";
import { PUBLIC_METHODS as KIT_PUBLIC_METHODS } from "@meshmart/kit";
import { stringify } from "yaml";
import { MESHMART_DESCRIPTOR, meshmartRegistry, REPO_ROOT } from "./descriptors.js";
import { any } from "./envoy-json.js";
import { LOCAL_REPLY_CODES, localReplyConfig } from "./local-replies.js";
import { JWT_SUBJECT_HEADER, RATE_LIMITS, type RateLimit, rateLimitFor } from "./rate-limits.js";

export { JWT_SUBJECT_HEADER, LOCAL_REPLY_CODES, RATE_LIMITS, type RateLimit };

export const ENVOY_YAML = join(REPO_ROOT, "edge/envoy/envoy.yaml");
/** Where the deploy mounts the descriptor set for grpc_json_transcoder. */
export const DESCRIPTOR_MOUNT_PATH = "/etc/envoy/meshmart.binpb";
/** Where the edge image keeps the OpenAPI document it serves at /openapi.json. */
export const OPENAPI_MOUNT_PATH = "/etc/envoy/meshmart.openapi.json";
export const POD_PORTS = { grpc: 9000, http: 9001, admin: 9002 } as const;
export const LISTENER_PORT = 8080;
export const ADMIN_PORT = 9901;
export const STOREFRONT_PORT = 8080;
export const JWT_PROVIDER = "identity";
export const JWT_ISSUER = "meshmart-identity";
export const JWT_AUDIENCE = "meshmart";
export const JWT_PAYLOAD_HEADER = "x-jwt-payload";
/**
 * How long past `exp` the edge still takes a token. Envoy's default is 60 s, but the services
 * behind it allow none: a token the edge let through would be refused there, without the
 * edge's `WWW-Authenticate` challenge. (0 would mean "unset", i.e. 60.)
 */
export const JWT_CLOCK_SKEW_S = 1;
export const HEALTH_PATH = "/healthz";
/** The method the client sent, before the transcoder turns a REST call into a gRPC POST. */
export const ORIGINAL_METHOD_HEADER = "x-edge-original-method";
export const OPENAPI_PATH = "/openapi.json";
/** Request headers larger than this are refused with 431. */
export const MAX_REQUEST_HEADERS_KB = 32;
/** Open client connections one edge replica accepts; more are refused at accept. */
export const MAX_DOWNSTREAM_CONNECTIONS = 50_000;
/** A REST request body larger than this is refused with 413. */
export const MAX_REQUEST_BODY_BYTES = 1024 * 1024;

/** Methods callable without a token: the services' own list (the kit's auth step treats a
 *  bad token on them as none). Everything else the edge routes requires a valid JWT. */
export const PUBLIC_METHODS: readonly string[] = [...KIT_PUBLIC_METHODS].sort();

export const CORS_ALLOWED_ORIGINS = {
  exact: ["https://shop.meshmart.example"],
  regex: ["^http://localhost(:[0-9]+)?$", "^http://127\\.0\\.0\\.1(:[0-9]+)?$"],
} as const;

/** Where the edge finds its upstreams and files; the only thing local and cluster differ in. */
export interface EdgeTarget {
  /** Human description for the header comment. */
  describe: string;
  listen: SocketAddress;
  admin: SocketAddress;
  /** A service's gRPC (h2c) or Connect (HTTP/1.1) port. */
  upstream(service: string, port: "grpc" | "http"): SocketAddress;
  storefront: SocketAddress;
  /** DNS names resolve (cluster) or addresses are IPs (local, STATIC clusters). */
  resolve: "dns" | "static";
  descriptorPath: string;
  openapiPath: string;
  /** Spans to an OpenTelemetry collector; absent (the cluster's target), the edge traces nothing. */
  tracing?: EdgeTracing;
}

/**
 * The edge's own spans: Envoy's OpenTelemetry tracer, exporting OTLP/gRPC to `collector`.
 * Envoy then starts (or continues) each request's W3C trace and passes its span as the
 * services' parent, and answers with the trace id in `x-trace-id`.
 */
export interface EdgeTracing {
  collector: SocketAddress;
  /** Percent of requests without a sampled parent that are traced (100 locally). */
  samplingPercent: number;
}

/** The cluster the edge's OpenTelemetry tracer exports to (only with {@link EdgeTracing}). */
export const TRACING_CLUSTER = "otel_collector";
/** The response header that carries the trace id when the edge traces. */
export const TRACE_ID_HEADER = "x-trace-id";

export interface SocketAddress {
  address: string;
  port: number;
}

const svcHost = (name: string) => `${name}.meshmart.svc.cluster.local`;

/** The cluster: Kubernetes Services, files where the edge image puts them. */
export const CLUSTER_TARGET: EdgeTarget = {
  describe: `Pod ports: grpc ${POD_PORTS.grpc} (h2c), http ${POD_PORTS.http} (Connect/JSON, JWKS), admin ${POD_PORTS.admin}; services at <name>.meshmart.svc.cluster.local; the storefront at storefront.meshmart.svc.cluster.local:${STOREFRONT_PORT}.
# The edge image holds the descriptor set at ${DESCRIPTOR_MOUNT_PATH} and the OpenAPI document at ${OPENAPI_MOUNT_PATH}.`,
  listen: { address: "0.0.0.0", port: LISTENER_PORT },
  admin: { address: "127.0.0.1", port: ADMIN_PORT },
  upstream: (service, port) => ({ address: svcHost(service), port: POD_PORTS[port] }),
  storefront: { address: svcHost("storefront"), port: STOREFRONT_PORT },
  resolve: "dns",
  descriptorPath: DESCRIPTOR_MOUNT_PATH,
  openapiPath: OPENAPI_MOUNT_PATH,
};

const HTTP_RULE = "google.api.http";

export interface PublicService {
  /** fully qualified, e.g. meshmart.catalog.v1.CatalogService */
  typeName: string;
  /** cluster / Kubernetes Service name, e.g. catalog */
  cluster: string;
  streamingMethods: string[];
}

/** Public = has at least one google.api.http rule; the service name is the package's domain. */
export function publicServices(registry: FileRegistry): PublicService[] {
  const http = registry.getExtension(HTTP_RULE);
  if (!http) throw new Error(`descriptor set lacks ${HTTP_RULE}: build it with imports included`);
  const out: PublicService[] = [];
  for (const desc of registry) {
    if (desc.kind !== "service" || !desc.typeName.startsWith("meshmart.")) continue;
    if (!desc.methods.some((m) => hasOption(m, http))) continue;
    out.push({
      typeName: desc.typeName,
      cluster: clusterFor(desc),
      streamingMethods: desc.methods
        .filter((m) => m.methodKind === "server_streaming" || m.methodKind === "bidi_streaming")
        .map((m) => m.name)
        .sort(),
    });
  }
  return out.sort((a, b) => a.typeName.localeCompare(b.typeName));
}

function clusterFor(svc: DescService): string {
  const m = /^meshmart\.([a-z0-9_]+)\.v[0-9]+\./.exec(svc.typeName);
  if (!m?.[1]) throw new Error(`cannot derive a cluster name from ${svc.typeName}`);
  return m[1];
}

function checkMethods(registry: FileRegistry, services: PublicService[], names: string[]): void {
  for (const full of names) {
    const dot = full.lastIndexOf(".");
    const svc = registry.getService(full.slice(0, dot));
    if (!svc?.methods.some((m) => m.name === full.slice(dot + 1))) {
      throw new Error(`the edge config names ${full}, which is not in the descriptor set`);
    }
    if (!services.some((s) => s.typeName === svc.typeName)) {
      throw new Error(`the edge config names ${full}, but ${svc.typeName} has no http rules`);
    }
  }
}

/** `/pkg.Service/Method` of `pkg.Service.Method`. */
export const methodPath = (full: string): string => {
  const dot = full.lastIndexOf(".");
  return `/${full.slice(0, dot)}/${full.slice(dot + 1)}`;
};

/** API-looking paths (any case): versioned REST, well-known documents. */
const REST_PATHS = "(?i)^/(v[0-9]+|\\.well-known)(/.*)?$";
const REST_UNMATCHED = "rest_unmatched";
/** Pseudo-headers are out of header_mutation's reach; a one-line Lua script is not. */
const HEAD_AS_GET = 'function envoy_on_request(h) h:headers():replace(":method", "GET") end\n';
const F = {
  headerMutation: "envoy.filters.http.header_mutation",
  buffer: "envoy.filters.http.buffer",
  lua: "envoy.filters.http.lua",
  transcoder: "envoy.filters.http.grpc_json_transcoder",
  rateLimit: "envoy.filters.http.local_ratelimit",
  jwt: "envoy.filters.http.jwt_authn",
} as const;
/** Turns one HTTP filter off on a route (the storefront and Connect need no transcoding). */
const disabled = any("envoy.config.route.v3.FilterConfig", { disabled: true });

function endpoints(name: string, at: SocketAddress) {
  return {
    cluster_name: name,
    endpoints: [
      {
        lb_endpoints: [
          {
            endpoint: { address: { socket_address: { address: at.address, port_value: at.port } } },
          },
        ],
      },
    ],
  };
}

function clusterBase(name: string, at: SocketAddress, target: EdgeTarget) {
  return {
    name,
    type: target.resolve === "dns" ? "STRICT_DNS" : "STATIC",
    connect_timeout: "1s",
    ...(target.resolve === "dns" ? { dns_lookup_family: "V4_ONLY" } : {}),
    lb_policy: "ROUND_ROBIN",
    load_assignment: endpoints(name, at),
  };
}

const circuitBreakers = {
  thresholds: [
    {
      priority: "DEFAULT",
      max_connections: 1024,
      max_pending_requests: 1024,
      max_requests: 1024,
      max_retries: 3,
    },
  ],
};

function grpcCluster(name: string, target: EdgeTarget) {
  return {
    ...clusterBase(name, target.upstream(name, "grpc"), target),
    typed_extension_protocol_options: {
      "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": any(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        {
          common_http_protocol_options: { idle_timeout: "300s" },
          explicit_http_config: { http2_protocol_options: { max_concurrent_streams: 1000 } },
        },
      ),
    },
    health_checks: [
      {
        timeout: "1s",
        interval: "5s",
        unhealthy_threshold: 2,
        healthy_threshold: 1,
        grpc_health_check: {},
      },
    ],
    // A host that has never been checked still takes traffic: the edge may start before
    // (or restart after) the services without answering 503 for the first interval.
    ignore_health_on_host_removal: true,
    common_lb_config: { healthy_panic_threshold: { value: 50 } },
    circuit_breakers: circuitBreakers,
  };
}

/** Connect (JSON or binary over HTTP/1.1) goes to the service's own Connect port as is. */
function connectCluster(name: string, target: EdgeTarget) {
  return {
    ...clusterBase(`${name}_http`, target.upstream(name, "http"), target),
    typed_extension_protocol_options: {
      "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": any(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        {
          common_http_protocol_options: { idle_timeout: "60s" },
          explicit_http_config: { http_protocol_options: {} },
        },
      ),
    },
    circuit_breakers: circuitBreakers,
  };
}

export function buildConfig(
  registry: FileRegistry,
  target: EdgeTarget = CLUSTER_TARGET,
): Record<string, unknown> {
  const services = publicServices(registry);
  checkMethods(registry, services, [...PUBLIC_METHODS, ...Object.keys(RATE_LIMITS.methods)]);
  const identity = services.find((s) => s.cluster === "identity");
  if (!identity) throw new Error("identity must be a public service (it serves the JWKS)");

  const routes: unknown[] = [
    {
      name: "openapi",
      match: { path: OPENAPI_PATH, headers: [methodIs("GET", "HEAD")] },
      direct_response: { status: 200, body: { filename: target.openapiPath } },
      response_headers_to_add: [
        header("content-type", "application/json"),
        header("cache-control", "public, max-age=300"),
      ],
      typed_per_filter_config: { [F.transcoder]: disabled },
    },
  ];
  const grpc = { name: "content-type", string_match: { prefix: "application/grpc" } };
  const defaultLimit = rateLimitFor(RATE_LIMITS.default, "edge_rate_limit");
  for (const s of services) {
    // gRPC and gRPC-Web (grpc_web turns it into gRPC) reach the gRPC port; so do REST calls,
    // which the transcoder has turned into gRPC by the time the router picks the route.
    // Connect requests (any other content type, or a GET) go to the Connect port untouched.
    for (const kind of ["grpc", "connect"] as const) {
      const cluster = kind === "grpc" ? s.cluster : `${s.cluster}_http`;
      const headers = kind === "grpc" ? [grpc] : [];
      const perFilter = (limit: unknown) => ({
        [F.rateLimit]: limit,
        [F.buffer]: disabled,
        ...(kind === "connect" ? { [F.transcoder]: disabled } : {}),
      });
      for (const m of s.streamingMethods) {
        routes.push({
          name: `${s.cluster}.${m}.${kind}`,
          match: { path: `/${s.typeName}/${m}`, headers },
          // No overall timeout for a stream; idle streams still end.
          route: { cluster, timeout: "0s", idle_timeout: "300s" },
          typed_per_filter_config: perFilter(defaultLimit),
        });
      }
      for (const [full, limit] of Object.entries(RATE_LIMITS.methods)) {
        if (!full.startsWith(`${s.typeName}.`)) continue;
        routes.push({
          name: `${s.cluster}.${full.slice(s.typeName.length + 1)}.${kind}`,
          match: { path: methodPath(full), headers },
          route: unaryRoute(cluster),
          typed_per_filter_config: perFilter(
            rateLimitFor(limit, `edge_rate_limit_${full.slice(s.typeName.length + 1)}`),
          ),
        });
      }
      routes.push({
        name: `${s.cluster}.${kind}`,
        match: { prefix: `/${s.typeName}/`, headers },
        route: unaryRoute(cluster),
        typed_per_filter_config: perFilter(defaultLimit),
      });
    }
  }
  routes.push(
    {
      // gRPC for anything the edge does not publish (reflection, health, internal services).
      name: "grpc.unpublished",
      match: { prefix: "/", headers: [grpc] },
      direct_response: { status: 404, body: { inline_string: "no such service at the edge" } },
      typed_per_filter_config: { [F.transcoder]: disabled },
    },
    {
      // HEAD wherever GET works: the transcoder only knows GET bindings, so the edge asks
      // for GET and Envoy drops the body of the answer.
      name: "rest.head",
      match: { safe_regex: { regex: REST_PATHS }, headers: [methodIs("HEAD")] },
      route: { cluster: REST_UNMATCHED, timeout: "15s" },
      typed_per_filter_config: {
        [F.lua]: any("envoy.extensions.filters.http.lua.v3.LuaPerRoute", {
          source_code: { inline_string: HEAD_AS_GET },
        }),
      },
    },
    {
      // REST paths: the transcoder turns every one that matches a binding into a gRPC call
      // (and the router re-matches it above); the rest it answers 404 itself. This route only
      // gives CORS and the body limit a route to work on; its cluster has no hosts.
      name: "rest",
      match: { safe_regex: { regex: REST_PATHS } },
      route: { cluster: REST_UNMATCHED, timeout: "15s" },
    },
    {
      // The storefront: GET and HEAD only; its server answers client routes with the app.
      name: "storefront",
      match: { prefix: "/", headers: [methodIs("GET", "HEAD")] },
      route: { cluster: "storefront", timeout: "15s" },
      typed_per_filter_config: { [F.transcoder]: disabled, [F.buffer]: disabled },
    },
    {
      name: "nothing",
      match: { prefix: "/" },
      direct_response: { status: 404, body: { inline_string: "not found" } },
      typed_per_filter_config: { [F.transcoder]: disabled },
    },
  );

  // Public methods still verify a token that comes along, so a signed-in caller is rate
  // limited as a user there too (x-jwt-sub); a bad or stale one is no reason to refuse a
  // public call, and the caller is then treated as anonymous (limited by IP).
  const optionalToken = {
    requires_any: {
      requirements: [{ provider_name: JWT_PROVIDER }, { allow_missing_or_failed: {} }],
    },
  };
  const jwtRules: unknown[] = [
    ...[...PUBLIC_METHODS]
      .sort()
      .map((full) => ({ match: { path: methodPath(full) }, requires: optionalToken })),
    ...services.map((s) => ({
      match: { prefix: `/${s.typeName}/` },
      requires: { provider_name: JWT_PROVIDER },
    })),
  ];

  const httpFilters = [
    {
      // Clients must never forge the headers the edge derives from a verified token.
      name: F.headerMutation,
      typed_config: any("envoy.extensions.filters.http.header_mutation.v3.HeaderMutation", {
        mutations: {
          request_mutations: [
            { remove: JWT_PAYLOAD_HEADER },
            { remove: JWT_SUBJECT_HEADER },
            // The transcoder makes every REST call a POST; the access log shows the caller's.
            { append: header(ORIGINAL_METHOD_HEADER, "%REQ(:METHOD)%") },
          ],
        },
      }),
    },
    {
      name: "envoy.filters.http.cors",
      typed_config: any("envoy.extensions.filters.http.cors.v3.Cors", {}),
    },
    {
      name: "envoy.filters.http.health_check",
      typed_config: any("envoy.extensions.filters.http.health_check.v3.HealthCheck", {
        pass_through_mode: false,
        headers: [{ name: ":path", string_match: { exact: HEALTH_PATH } }],
      }),
    },
    {
      name: "envoy.filters.http.grpc_web",
      typed_config: any("envoy.extensions.filters.http.grpc_web.v3.GrpcWeb", {}),
    },
    {
      // Does nothing but on the routes that name a script (HEAD on REST paths).
      name: F.lua,
      typed_config: any("envoy.extensions.filters.http.lua.v3.Lua", {}),
    },
    {
      // REST bodies are transcoded as they stream; this bounds them (413). gRPC, gRPC-Web
      // and Connect routes turn it off: those protocols and the services bound their own.
      name: F.buffer,
      typed_config: any("envoy.extensions.filters.http.buffer.v3.Buffer", {
        max_request_bytes: MAX_REQUEST_BODY_BYTES,
      }),
    },
    {
      name: F.transcoder,
      typed_config: any(
        "envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
        {
          proto_descriptor: target.descriptorPath,
          services: services.map((s) => s.typeName),
          print_options: {
            add_whitespace: false,
            always_print_primitive_fields: true,
            always_print_enums_as_ints: false,
            preserve_proto_field_names: false,
          },
          auto_mapping: false,
          match_incoming_request_route: false,
          convert_grpc_status: true,
          max_request_body_size: MAX_REQUEST_BODY_BYTES,
          max_response_body_size: 4 * 1024 * 1024,
          request_validation_options: {
            reject_unknown_method: true,
            reject_unknown_query_parameters: true,
            reject_binding_body_field_collisions: true,
          },
        },
      ),
    },
    {
      // After the transcoder, so rules see the gRPC method path for REST, gRPC, gRPC-Web
      // and Connect alike.
      name: F.jwt,
      typed_config: any("envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication", {
        providers: {
          [JWT_PROVIDER]: {
            issuer: JWT_ISSUER,
            audiences: [JWT_AUDIENCE],
            remote_jwks: {
              http_uri: {
                uri: `http://${hostPort(target.upstream("identity", "http"))}/.well-known/jwks.json`,
                cluster: "identity_http",
                timeout: "2s",
              },
              cache_duration: "300s",
              async_fetch: {},
              retry_policy: { num_retries: 3 },
            },
            clock_skew_seconds: JWT_CLOCK_SKEW_S,
            forward: true,
            forward_payload_header: JWT_PAYLOAD_HEADER,
            claim_to_headers: [{ header_name: JWT_SUBJECT_HEADER, claim_name: "sub" }],
          },
        },
        rules: jwtRules,
      }),
    },
    {
      // After jwt_authn: a signed-in user's bucket is keyed by the verified subject.
      name: F.rateLimit,
      typed_config: any("envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit", {
        stat_prefix: "edge_rate_limit",
      }),
    },
    {
      name: "envoy.filters.http.router",
      typed_config: any("envoy.extensions.filters.http.router.v3.Router", {}),
    },
  ];

  const accessLog = {
    name: "envoy.access_loggers.stdout",
    typed_config: any("envoy.extensions.access_loggers.stream.v3.StdoutAccessLog", {
      log_format: {
        json_format: {
          time: "%START_TIME%",
          request_id: "%REQ(X-REQUEST-ID)%",
          method: `%REQ(${ORIGINAL_METHOD_HEADER.toUpperCase()}?:METHOD)%`,
          path: "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
          grpc_path: "%REQ(:PATH)%",
          status: "%RESPONSE_CODE%",
          grpc_status: "%GRPC_STATUS%",
          response_flags: "%RESPONSE_FLAGS%",
          duration_ms: "%DURATION%",
          upstream_cluster: "%UPSTREAM_CLUSTER%",
          upstream_host: "%UPSTREAM_HOST%",
          bytes_received: "%BYTES_RECEIVED%",
          bytes_sent: "%BYTES_SENT%",
          client: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
          user_agent: "%REQ(USER-AGENT)%",
          traceparent: "%REQ(TRACEPARENT)%",
        },
      },
    }),
  };

  const hcm = any(
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    {
      stat_prefix: "edge",
      codec_type: "AUTO",
      use_remote_address: true,
      xff_num_trusted_hops: 0,
      generate_request_id: true,
      // A caller's own request id is kept (its logs and ours then share it); absent, Envoy
      // makes one. Either way the services and the answer carry it.
      preserve_external_request_id: true,
      always_set_request_id_in_response: true,
      request_id_extension: {
        typed_config: any("envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig", {}),
      },
      normalize_path: true,
      merge_slashes: true,
      path_with_escaped_slashes_action: "REJECT_REQUEST",
      max_request_headers_kb: MAX_REQUEST_HEADERS_KB,
      stream_idle_timeout: "300s",
      request_timeout: "0s",
      request_headers_timeout: "10s",
      common_http_protocol_options: {
        idle_timeout: "3600s",
        headers_with_underscores_action: "REJECT_REQUEST",
      },
      http_protocol_options: { accept_http_10: false },
      http2_protocol_options: { max_concurrent_streams: 100, initial_stream_window_size: 65536 },
      access_log: [accessLog],
      ...(target.tracing === undefined ? {} : { tracing: tracingConfig(target.tracing) }),
      local_reply_config: localReplyConfig(),
      route_config: {
        name: "meshmart",
        // The OpenAPI document is answered by Envoy itself.
        max_direct_response_body_size_bytes: 1024 * 1024,
        // The trace of a request, for someone who wants to look it up in Jaeger.
        ...(target.tracing === undefined
          ? {}
          : {
              response_headers_to_add: [header(TRACE_ID_HEADER, "%TRACE_ID%")],
            }),
        virtual_hosts: [
          {
            name: "meshmart",
            domains: ["*"],
            typed_per_filter_config: {
              "envoy.filters.http.cors": any("envoy.extensions.filters.http.cors.v3.CorsPolicy", {
                allow_origin_string_match: [
                  ...CORS_ALLOWED_ORIGINS.exact.map((exact) => ({ exact })),
                  ...CORS_ALLOWED_ORIGINS.regex.map((regex) => ({ safe_regex: { regex } })),
                ],
                allow_methods: "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
                allow_headers:
                  "authorization, content-type, idempotency-key, x-request-id, x-grpc-web, x-user-agent, grpc-timeout, connect-protocol-version, connect-timeout-ms, traceparent, tracestate",
                expose_headers:
                  "grpc-status, grpc-message, grpc-status-details-bin, x-request-id, retry-after, www-authenticate",
                max_age: "600",
                allow_credentials: false,
              }),
            },
            routes,
          },
        ],
      },
      http_filters: httpFilters,
    },
  );

  return {
    admin: {
      address: {
        socket_address: { address: target.admin.address, port_value: target.admin.port },
      },
    },
    // A bound on open client connections, so a flood of them cannot exhaust the edge's
    // memory or file descriptors (Envoy warns at start when there is none).
    overload_manager: {
      resource_monitors: [
        {
          name: "envoy.resource_monitors.global_downstream_max_connections",
          typed_config: any(
            "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
            { max_active_downstream_connections: MAX_DOWNSTREAM_CONNECTIONS },
          ),
        },
      ],
    },
    static_resources: {
      listeners: [
        {
          name: "edge_http",
          address: {
            socket_address: { address: target.listen.address, port_value: target.listen.port },
          },
          per_connection_buffer_limit_bytes: 1048576,
          filter_chains: [
            {
              filters: [
                { name: "envoy.filters.network.http_connection_manager", typed_config: hcm },
              ],
            },
          ],
        },
      ],
      clusters: [
        ...services.map((s) => grpcCluster(s.cluster, target)),
        ...services.map((s) => connectCluster(s.cluster, target)),
        {
          name: REST_UNMATCHED,
          type: "STATIC",
          connect_timeout: "1s",
          load_assignment: { cluster_name: REST_UNMATCHED },
        },
        {
          ...clusterBase("storefront", target.storefront, target),
          circuit_breakers: circuitBreakers,
        },
        ...(target.tracing === undefined ? [] : [tracingCluster(target.tracing, target)]),
      ],
    },
  };
}

/** The HTTP connection manager's tracing: every request gets a server span (W3C context). */
function tracingConfig(tracing: EdgeTracing) {
  return {
    random_sampling: { value: tracing.samplingPercent },
    provider: {
      name: "envoy.tracers.opentelemetry",
      typed_config: any("envoy.config.trace.v3.OpenTelemetryConfig", {
        grpc_service: { envoy_grpc: { cluster_name: TRACING_CLUSTER }, timeout: "1s" },
        service_name: "edge",
      }),
    },
  };
}

/** The OTLP/gRPC collector's cluster (h2c). */
function tracingCluster(tracing: EdgeTracing, target: EdgeTarget) {
  return {
    ...clusterBase(TRACING_CLUSTER, tracing.collector, target),
    typed_extension_protocol_options: {
      "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": any(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        { explicit_http_config: { http2_protocol_options: {} } },
      ),
    },
  };
}

function unaryRoute(cluster: string) {
  return {
    cluster,
    timeout: "15s",
    max_stream_duration: { grpc_timeout_header_max: "15s" },
  };
}

function methodIs(...methods: string[]) {
  return { name: ":method", string_match: { safe_regex: { regex: `^(${methods.join("|")})$` } } };
}

function header(key: string, value: string) {
  return { append_action: "OVERWRITE_IF_EXISTS_OR_ADD", header: { key, value } };
}

const hostPort = (at: SocketAddress) => `${at.address}:${at.port}`;

function headerFor(target: EdgeTarget): string {
  return `# generated by edge/envoy/generate.ts; do not edit
# Regenerate: node_modules/.bin/buf build --as-file-descriptor-set -o .build/meshmart.binpb
#             node --import tsx edge/envoy/generate.ts
# Validate:   node --import tsx edge/envoy/validate.ts edge/envoy/envoy.yaml
#             envoy --mode validate -c <this file>
# ${target.describe}
`;
}

/** The YAML Envoy runs for `target` (the cluster's when omitted). */
export function renderEnvoyYaml(
  registry: FileRegistry,
  target: EdgeTarget = CLUSTER_TARGET,
): string {
  return (
    headerFor(target) +
    stringify(buildConfig(registry, target), { lineWidth: 0, aliasDuplicateObjects: false })
  );
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      descriptor: { type: "string", default: MESHMART_DESCRIPTOR },
      out: { type: "string", default: ENVOY_YAML },
      check: { type: "boolean", default: false },
    },
  });
  const text = renderEnvoyYaml(meshmartRegistry(values.descriptor));
  if (values.check) {
    let current = "";
    try {
      current = readFileSync(values.out, "utf8");
    } catch {}
    if (current !== text) {
      process.stderr.write(
        `${values.out} is stale: run node --import tsx edge/envoy/generate.ts\n`,
      );
      process.exit(1);
    }
    return;
  }
  writeFileSync(values.out, text);
  process.stdout.write(`wrote ${values.out}\n`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
