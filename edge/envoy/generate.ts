/**
 * Generates edge/envoy/envoy.yaml (Envoy static bootstrap for the production edge) from the
 * meshmart descriptor set, so the REST surface Envoy transcodes is exactly what proto/ declares.
 *
 *   node_modules/.bin/buf build --as-file-descriptor-set -o .build/meshmart.binpb
 *   node --import tsx edge/envoy/generate.ts [--descriptor .build/meshmart.binpb] [--out edge/envoy/envoy.yaml] [--check]
 *
 * --check exits 1 if the committed file differs from what would be generated (CI staleness).
 *
 * Ports (decided here, documented in the yaml header): inside pods every service listens on
 * grpc 9000 (h2c; Istio's sidecar adds mTLS), http 9001 (Connect/gRPC-Web/JSON, HTTP/1.1; serves
 * identity's /.well-known/jwks.json) and admin 9002 (metrics). Kubernetes Services are
 * `<name>.meshmart.svc.cluster.local`. Envoy listens on 8080, its admin on 127.0.0.1:9901.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { type DescService, type FileRegistry, hasOption } from "@bufbuild/protobuf";
import { stringify } from "yaml";
import { MESHMART_DESCRIPTOR, meshmartRegistry, REPO_ROOT } from "./descriptors.js";

export const ENVOY_YAML = join(REPO_ROOT, "edge/envoy/envoy.yaml");
/** Where the deploy mounts the descriptor set for grpc_json_transcoder. */
export const DESCRIPTOR_MOUNT_PATH = "/etc/envoy/meshmart.binpb";
export const POD_PORTS = { grpc: 9000, http: 9001, admin: 9002 } as const;
export const LISTENER_PORT = 8080;
export const ADMIN_PORT = 9901;
export const JWT_PROVIDER = "identity";
export const JWT_ISSUER = "meshmart-identity";
export const JWT_AUDIENCE = "meshmart";
export const JWT_PAYLOAD_HEADER = "x-jwt-payload";
export const HEALTH_PATH = "/healthz";

/** Methods callable without a token (must match the local edge in edge/src). Everything else
 *  that is transcoded or routed requires a valid JWT: deny by default. */
export const PUBLIC_METHODS: readonly string[] = [
  "meshmart.catalog.v1.CatalogService.GetProduct",
  "meshmart.catalog.v1.CatalogService.ListProducts",
  "meshmart.catalog.v1.CatalogService.ListCategories",
  "meshmart.identity.v1.IdentityService.SignUp",
  "meshmart.identity.v1.IdentityService.Login",
  "meshmart.identity.v1.IdentityService.RefreshToken",
  "meshmart.identity.v1.IdentityService.GetJwks",
];

export const CORS_ALLOWED_ORIGINS = {
  exact: ["https://shop.meshmart.example"],
  regex: ["^http://localhost(:[0-9]+)?$"],
} as const;

const HTTP_RULE = "google.api.http";
const svcHost = (name: string) => `${name}.meshmart.svc.cluster.local`;

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

function checkPublicMethods(registry: FileRegistry, services: PublicService[]): void {
  for (const full of PUBLIC_METHODS) {
    const dot = full.lastIndexOf(".");
    const svc = registry.getService(full.slice(0, dot));
    if (!svc?.methods.some((m) => m.name === full.slice(dot + 1))) {
      throw new Error(`PUBLIC_METHODS names ${full}, which is not in the descriptor set`);
    }
    if (!services.some((s) => s.typeName === svc.typeName)) {
      throw new Error(`PUBLIC_METHODS names ${full}, but ${svc.typeName} has no http rules`);
    }
  }
}

const any = (type: string, body: Record<string, unknown>) => ({
  "@type": `type.googleapis.com/${type}`,
  ...body,
});
const pct100 = (runtimeKey: string) => ({
  runtime_key: runtimeKey,
  default_value: { numerator: 100, denominator: "HUNDRED" },
});

function grpcCluster(name: string) {
  return {
    name,
    type: "STRICT_DNS",
    connect_timeout: "1s",
    dns_lookup_family: "V4_ONLY",
    lb_policy: "ROUND_ROBIN",
    typed_extension_protocol_options: {
      "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": any(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        {
          common_http_protocol_options: { idle_timeout: "300s" },
          explicit_http_config: { http2_protocol_options: { max_concurrent_streams: 1000 } },
        },
      ),
    },
    load_assignment: endpoints(name, POD_PORTS.grpc),
    health_checks: [
      {
        timeout: "1s",
        interval: "5s",
        unhealthy_threshold: 2,
        healthy_threshold: 1,
        grpc_health_check: {},
      },
    ],
    circuit_breakers: {
      thresholds: [
        {
          priority: "DEFAULT",
          max_connections: 1024,
          max_pending_requests: 1024,
          max_requests: 1024,
          max_retries: 3,
        },
      ],
    },
  };
}

function endpoints(name: string, port: number) {
  return {
    cluster_name: name,
    endpoints: [
      {
        lb_endpoints: [
          {
            endpoint: { address: { socket_address: { address: svcHost(name), port_value: port } } },
          },
        ],
      },
    ],
  };
}

export function buildConfig(registry: FileRegistry): Record<string, unknown> {
  const services = publicServices(registry);
  checkPublicMethods(registry, services);
  const identity = services.find((s) => s.cluster === "identity");
  if (!identity) throw new Error("identity must be a public service (it serves the JWKS)");

  const routes: unknown[] = [];
  for (const s of services) {
    // Server-streaming methods: no overall timeout, idle timeout instead.
    for (const m of s.streamingMethods) {
      routes.push({
        name: `${s.cluster}.${m}`,
        match: { path: `/${s.typeName}/${m}` },
        route: { cluster: s.cluster, timeout: "0s", idle_timeout: "300s" },
      });
    }
    routes.push({
      name: s.cluster,
      match: { prefix: `/${s.typeName}/` },
      route: {
        cluster: s.cluster,
        timeout: "15s",
        max_stream_duration: { grpc_timeout_header_max: "15s" },
      },
    });
  }

  const jwtRules: unknown[] = [
    ...[...PUBLIC_METHODS].sort().map((full) => {
      const dot = full.lastIndexOf(".");
      return { match: { path: `/${full.slice(0, dot)}/${full.slice(dot + 1)}` } };
    }),
    { match: { prefix: "/" }, requires: { provider_name: JWT_PROVIDER } },
  ];

  const httpFilters = [
    {
      // Clients must never be able to forge the verified-claims header on public routes.
      name: "envoy.filters.http.header_mutation",
      typed_config: any("envoy.extensions.filters.http.header_mutation.v3.HeaderMutation", {
        mutations: { request_mutations: [{ remove: JWT_PAYLOAD_HEADER }] },
      }),
    },
    {
      name: "envoy.filters.http.cors",
      typed_config: any("envoy.extensions.filters.http.cors.v3.Cors", {}),
    },
    {
      name: "envoy.filters.http.grpc_web",
      typed_config: any("envoy.extensions.filters.http.grpc_web.v3.GrpcWeb", {}),
    },
    {
      name: "envoy.filters.http.health_check",
      typed_config: any("envoy.extensions.filters.http.health_check.v3.HealthCheck", {
        pass_through_mode: false,
        headers: [{ name: ":path", string_match: { exact: HEALTH_PATH } }],
      }),
    },
    {
      name: "envoy.filters.http.local_ratelimit",
      typed_config: any("envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit", {
        stat_prefix: "edge_local_rate_limit",
        status: { code: "TooManyRequests" },
        token_bucket: { max_tokens: 200, tokens_per_fill: 100, fill_interval: "1s" },
        filter_enabled: pct100("local_rate_limit_enabled"),
        filter_enforced: pct100("local_rate_limit_enforced"),
        rate_limited_as_resource_exhausted: true,
        response_headers_to_add: [
          {
            append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
            header: { key: "x-local-rate-limit", value: "true" },
          },
        ],
      }),
    },
    {
      name: "envoy.filters.http.grpc_json_transcoder",
      typed_config: any(
        "envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
        {
          proto_descriptor: DESCRIPTOR_MOUNT_PATH,
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
          max_request_body_size: 1048576,
          max_response_body_size: 4194304,
          request_validation_options: {
            reject_unknown_method: true,
            reject_unknown_query_parameters: true,
          },
        },
      ),
    },
    {
      // After the transcoder, so rules see the gRPC method path for REST, gRPC and gRPC-Web alike.
      name: "envoy.filters.http.jwt_authn",
      typed_config: any("envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication", {
        providers: {
          [JWT_PROVIDER]: {
            issuer: JWT_ISSUER,
            audiences: [JWT_AUDIENCE],
            remote_jwks: {
              http_uri: {
                uri: `http://${svcHost("identity")}:${POD_PORTS.http}/.well-known/jwks.json`,
                cluster: "identity_http",
                timeout: "2s",
              },
              cache_duration: "300s",
              async_fetch: {},
              retry_policy: { num_retries: 3 },
            },
            forward: true,
            forward_payload_header: JWT_PAYLOAD_HEADER,
          },
        },
        rules: jwtRules,
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
          method: "%REQ(:METHOD)%",
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
      always_set_request_id_in_response: true,
      request_id_extension: {
        typed_config: any("envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig", {}),
      },
      normalize_path: true,
      merge_slashes: true,
      stream_idle_timeout: "300s",
      request_timeout: "60s",
      request_headers_timeout: "10s",
      common_http_protocol_options: {
        idle_timeout: "3600s",
        headers_with_underscores_action: "REJECT_REQUEST",
      },
      http2_protocol_options: { max_concurrent_streams: 100, initial_stream_window_size: 65536 },
      access_log: [accessLog],
      route_config: {
        name: "meshmart",
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
                allow_methods: "GET, POST, PUT, PATCH, DELETE, OPTIONS",
                allow_headers:
                  "authorization, content-type, idempotency-key, x-request-id, x-grpc-web, x-user-agent, grpc-timeout, connect-protocol-version",
                expose_headers: "grpc-status, grpc-message, grpc-status-details-bin, x-request-id",
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
    admin: { address: { socket_address: { address: "127.0.0.1", port_value: ADMIN_PORT } } },
    static_resources: {
      listeners: [
        {
          name: "edge_http",
          address: { socket_address: { address: "0.0.0.0", port_value: LISTENER_PORT } },
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
        ...services.map((s) => grpcCluster(s.cluster)),
        {
          name: "identity_http",
          type: "STRICT_DNS",
          connect_timeout: "1s",
          dns_lookup_family: "V4_ONLY",
          lb_policy: "ROUND_ROBIN",
          load_assignment: {
            ...endpoints("identity", POD_PORTS.http),
            cluster_name: "identity_http",
          },
        },
      ],
    },
  };
}

const HEADER = `# generated by edge/envoy/generate.ts; do not edit
# Regenerate: node_modules/.bin/buf build --as-file-descriptor-set -o .build/meshmart.binpb
#             node --import tsx edge/envoy/generate.ts
# Validate:   node --import tsx edge/envoy/validate.ts edge/envoy/envoy.yaml
# Pod ports: grpc ${POD_PORTS.grpc} (h2c), http ${POD_PORTS.http} (Connect/JSON, JWKS), admin ${POD_PORTS.admin}; services at <name>.meshmart.svc.cluster.local.
# The deploy mounts .build/meshmart.binpb at ${DESCRIPTOR_MOUNT_PATH}.
`;

export function renderEnvoyYaml(registry: FileRegistry): string {
  return HEADER + stringify(buildConfig(registry), { lineWidth: 0, aliasDuplicateObjects: false });
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
