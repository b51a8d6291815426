/**
 * Builds the generated manifests from the call graph: the workload objects of deploy/base
 * (the services, the edge, the storefront), the NetworkPolicies, and the Istio
 * DestinationRules, VirtualServices, AuthorizationPolicies and Sidecars. Pure functions of
 * the graph; generate.ts writes them.
 */

import { LIVENESS_SERVICE } from "@meshmart/kit";
import {
  type CallGraph,
  calleesOf,
  callersOf,
  EDGE,
  edgePorts,
  fetchesStorefront,
  type GraphService,
  methodPath,
  principal,
  readOnlyMethods,
  SERVICE_DESCRIPTORS,
  STOREFRONT,
  serviceHost,
} from "./callgraph.js";

/** A Kubernetes object as plain data. */
export type K8sObject = { apiVersion: string; kind: string; metadata: Metadata } & Record<
  string,
  unknown
>;
interface Metadata {
  name: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

/** The kit's SIGTERM drain (kitConfigSchema SHUTDOWN_GRACE_MS default). */
export const SHUTDOWN_GRACE_MS = 20_000;
/** Seconds preStop waits so endpoints drop the pod before it stops accepting. */
export const PRESTOP_SLEEP_S = 5;
/** runMain exits at the latest this long after the grace period (its watchdog). */
export const MAIN_WATCHDOG_S = 5;
/** What Kubernetes waits after preStop starts before SIGKILL: the whole drain fits. */
export const TERMINATION_GRACE_S = PRESTOP_SLEEP_S + SHUTDOWN_GRACE_MS / 1000 + MAIN_WATCHDOG_S;
/** Retries the mesh makes for an idempotent method (on top of the first attempt). */
export const RETRY_ATTEMPTS = 2;
/** The only conditions the mesh retries on: nothing reached the handler, or it is unavailable. */
export const RETRY_ON = "unavailable,reset,connect-failure";
/** Non-root uid of the runtime images (distroless `nonroot`; Envoy's image uses 101). */
export const SERVICE_UID = 65532;
export const ENVOY_UID = 101;
/** Where the ingress gateway runs and which account it has (Istio's defaults). */
export const INGRESS = {
  namespace: "istio-system",
  serviceAccount: "istio-ingressgateway-service-account",
  selector: { istio: "ingressgateway" },
} as const;
/** The Prometheus that scrapes the admin ports (kube-prometheus defaults). */
export const MONITORING_NAMESPACE = "monitoring";

/** The sidecar's own port (merged Prometheus metrics, health); Prometheus scrapes it. */
export const ISTIO_AGENT_PORT = 15020;
/** The Envoy stats (as regexes over Envoy's stat names) the mesh alert rules need. */
export const MESH_ALERT_STATS = [
  "cluster\\..*\\.outlier_detection\\.ejections_enforced_total",
  "cluster\\..*\\.upstream_rq_retry",
  "cluster\\..*\\.upstream_rq_total",
  "http\\..*\\.rbac\\.denied",
];
/** What the edge's gRPC health checks call on each upstream. */
export const GRPC_HEALTH_CHECK_PATH = "/grpc.health.v1.Health/Check";

const PART_OF = "meshmart";
/** The port each data store listens on in the data namespace. */
export const DATA_PORTS = { postgres: 5432, redis: 6379, nats: 4222 } as const;

/** Labels of a workload; `app` is the one Istio's telemetry reads. */
export function labels(name: string, component = "service"): Record<string, string> {
  return {
    app: name,
    "app.kubernetes.io/name": name,
    "app.kubernetes.io/part-of": PART_OF,
    "app.kubernetes.io/component": component,
  };
}
const selector = (name: string) => ({ "app.kubernetes.io/name": name });

/** The image a workload runs; `make deploy` rewrites the `meshmart/` prefix to the registry. */
export function imageOf(workload: string): string {
  return `meshmart/${workload}:latest`;
}

/** Every workload of the mesh: the services, then the edge, then the storefront. */
export function workloads(graph: CallGraph): string[] {
  return [...graph.services.keys(), EDGE, STOREFRONT];
}

// ---------------------------------------------------------------- deploy/base: workloads

/** Settings of a service that are not secrets, from the graph (callee URLs, JWKS, peers). */
export function serviceSettings(graph: CallGraph, svc: GraphService): Record<string, string> {
  const { ports, dataNamespace } = graph;
  const data: Record<string, string> = {
    SERVICE_NAME: svc.name,
    GRPC_PORT: String(ports.grpc),
    HTTP_PORT: String(ports.http),
    ADMIN_PORT: String(ports.admin),
    BIND_HOST: "0.0.0.0",
    LOG_LEVEL: "info",
    ACCESS_LOG: "errors",
    SHUTDOWN_GRACE_MS: String(SHUTDOWN_GRACE_MS),
    EVENTS_NAMESPACE: "meshmart",
    STREAM_REPLICAS: "3",
  };
  if (svc.name !== graph.jwks.service && graph.jwks.callers.includes(svc.name)) {
    data.AUTH_JWKS_URL = jwksUrl(graph);
  }
  if (svc.uses.includes("redis")) {
    data.REDIS_URL = `redis://redis.${dataNamespace}.svc.cluster.local:${DATA_PORTS.redis}`;
  }
  for (const callee of svc.calls.keys()) {
    data[`${callee.toUpperCase()}_URL`] = `http://${serviceHost(graph, callee)}:${ports.grpc}`;
  }
  if (svc.name === "payments") {
    // payments reads its caller from the sidecar's XFCC header; the accounts allowed to
    // refund without ROLE_ADMIN are exactly the graph's callers of RefundPayment.
    data.MESH_PEER_IDENTITY = "xfcc";
    const refunders = [...callersOf(graph, "payments")]
      .filter(([, methods]) => methods.includes("RefundPayment"))
      .map(([caller]) => caller);
    data.REFUND_SERVICE_ACCOUNTS = refunders.join(",");
  }
  return data;
}

/** identity's JWKS URL inside the cluster. */
export function jwksUrl(graph: CallGraph): string {
  return `http://${serviceHost(graph, graph.jwks.service)}:${graph.ports.http}${graph.jwks.path}`;
}

/** Secret references of a service: its database and NATS passwords and its keys (values never here). */
function secretEnv(graph: CallGraph, svc: GraphService): unknown[] {
  const env: unknown[] = [];
  if (svc.uses.includes("postgres")) {
    env.push(
      {
        name: "DB_PASSWORD",
        valueFrom: { secretKeyRef: { name: `${svc.name}-db`, key: "password" } },
      },
      {
        name: "DATABASE_URL",
        // Kubernetes expands $(DB_PASSWORD); the password must be URL-safe (deploy/README.md).
        value: `postgres://${svc.name}:$(DB_PASSWORD)@postgres.${graph.dataNamespace}.svc.cluster.local:${DATA_PORTS.postgres}/${svc.name}`,
      },
    );
  }
  if (svc.uses.includes("nats")) {
    env.push(
      {
        name: "NATS_PASSWORD",
        valueFrom: { secretKeyRef: { name: `${svc.name}-nats`, key: "password" } },
      },
      {
        name: "NATS_URL",
        // The service's own NATS user: its subject permissions come from the graph
        // (scripts/deploy/nats-auth.ts). The password must be URL-safe, like the database's.
        value: `nats://${svc.name}:$(NATS_PASSWORD)@nats.${graph.dataNamespace}.svc.cluster.local:${DATA_PORTS.nats}`,
      },
    );
  }
  if (svc.name === "identity") {
    env.push(
      secretRef("IDENTITY_KEY_ENCRYPTION_KEY", "identity-keys", "key-encryption-key"),
      secretRef("IDENTITY_BOOTSTRAP_ADMIN_EMAIL", "identity-bootstrap-admin", "email", true),
      secretRef("IDENTITY_BOOTSTRAP_ADMIN_PASSWORD", "identity-bootstrap-admin", "password", true),
    );
  }
  if (svc.name === "orders") env.push(secretRef("SAGA_CARD_KEY", "orders-keys", "saga-card-key"));
  // Services with list methods sign their page tokens; every replica needs the same key.
  if (servesPages(svc)) {
    env.push(secretRef("PAGE_TOKEN_KEY", `${svc.name}-keys`, "page-token-key"));
  }
  return env;
}

/** Whether a service has a method taking a page_token (and so issues signed page tokens). */
export function servesPages(svc: GraphService): boolean {
  const desc = SERVICE_DESCRIPTORS.get(svc.grpcService);
  return desc?.methods.some((m) => m.input.fields.some((f) => f.name === "page_token")) ?? false;
}

function secretRef(name: string, secret: string, key: string, optional = false): unknown {
  return {
    name,
    valueFrom: { secretKeyRef: { name: secret, key, ...(optional ? { optional: true } : {}) } },
  };
}

const podSecurity = (uid: number) => ({
  runAsNonRoot: true,
  runAsUser: uid,
  runAsGroup: uid,
  fsGroup: uid,
  seccompProfile: { type: "RuntimeDefault" },
});
const containerSecurity = {
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  runAsNonRoot: true,
  capabilities: { drop: ["ALL"] },
  seccompProfile: { type: "RuntimeDefault" },
};

// The sidecar starts before the app (its first calls go through it) and keeps draining
// connections while the app finishes its own drain. It also exports the Envoy stats the
// mesh alerts read (deploy/base/observability/rules.yaml, group meshmart-mesh): istio-proxy
// drops most Envoy stats unless asked.
const proxyConfig = JSON.stringify({
  holdApplicationUntilProxyStarts: true,
  terminationDrainDuration: `${TERMINATION_GRACE_S - PRESTOP_SLEEP_S}s`,
  proxyStatsMatcher: { inclusionRegexps: MESH_ALERT_STATS },
});

function deployment(
  graph: CallGraph,
  name: string,
  container: Record<string, unknown>,
  uid: number,
  component: string,
): K8sObject {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name, namespace: graph.namespace, labels: labels(name, component) },
    spec: {
      replicas: 2,
      revisionHistoryLimit: 5,
      selector: { matchLabels: selector(name) },
      strategy: { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } },
      template: {
        metadata: {
          labels: { ...labels(name, component), "sidecar.istio.io/inject": "true" },
          annotations: { "proxy.istio.io/config": proxyConfig },
        },
        spec: {
          serviceAccountName: name,
          automountServiceAccountToken: false,
          terminationGracePeriodSeconds: TERMINATION_GRACE_S,
          securityContext: podSecurity(uid),
          containers: [
            {
              name: "app",
              image: imageOf(name),
              imagePullPolicy: "IfNotPresent",
              securityContext: { ...containerSecurity, runAsUser: uid, runAsGroup: uid },
              volumeMounts: [{ name: "tmp", mountPath: "/tmp" }],
              lifecycle: { preStop: { sleep: { seconds: PRESTOP_SLEEP_S } } },
              ...container,
            },
          ],
          volumes: [{ name: "tmp", emptyDir: { sizeLimit: "64Mi" } }],
        },
      },
    },
  };
}

const defaultResources = {
  requests: { cpu: "100m", memory: "128Mi" },
  limits: { cpu: "1", memory: "512Mi" },
};

function serviceObjects(graph: CallGraph, svc: GraphService): K8sObject[] {
  const { ports, namespace } = graph;
  const grpcProbe = { grpc: { port: ports.grpc } };
  const container = {
    ports: [
      { name: "grpc", containerPort: ports.grpc, protocol: "TCP" },
      { name: "http-connect", containerPort: ports.http, protocol: "TCP" },
      { name: "http-admin", containerPort: ports.admin, protocol: "TCP" },
    ],
    envFrom: [{ configMapRef: { name: `${svc.name}-config` } }],
    env: secretEnv(graph, svc),
    resources: defaultResources,
    // Startup: migrations and the first dependency checks, up to two minutes.
    startupProbe: { ...grpcProbe, periodSeconds: 2, failureThreshold: 60, timeoutSeconds: 2 },
    // Readiness is grpc.health.v1 Check(""), which the kit ties to the service's critical
    // dependencies and turns NOT_SERVING first thing on SIGTERM.
    readinessProbe: { ...grpcProbe, periodSeconds: 5, failureThreshold: 2, timeoutSeconds: 2 },
    // Liveness asks the kit's "liveness" health name: SERVING while the process serves at
    // all, so a database outage (readiness NOT_SERVING) never restarts the pod.
    livenessProbe: {
      grpc: { port: ports.grpc, service: LIVENESS_SERVICE },
      periodSeconds: 10,
      failureThreshold: 3,
      timeoutSeconds: 2,
    },
  };
  return [
    serviceAccount(graph, svc.name),
    {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: `${svc.name}-config`, namespace, labels: labels(svc.name) },
      data: serviceSettings(graph, svc),
    },
    deployment(graph, svc.name, container, SERVICE_UID, "service"),
    {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: svc.name, namespace, labels: labels(svc.name) },
      spec: {
        selector: selector(svc.name),
        ports: [
          { name: "grpc", port: ports.grpc, targetPort: "grpc", appProtocol: "grpc" },
          {
            name: "http-connect",
            port: ports.http,
            targetPort: "http-connect",
            appProtocol: "http",
          },
          { name: "http-admin", port: ports.admin, targetPort: "http-admin", appProtocol: "http" },
        ],
      },
    },
    ...scaling(graph, svc.name),
    serviceMonitor(graph, svc.name, "http-admin", "/metrics"),
  ];
}

function edgeObjects(graph: CallGraph): K8sObject[] {
  const httpProbe = { httpGet: { path: "/healthz", port: "http" } };
  const container = {
    ports: [{ name: "http", containerPort: graph.edge.port, protocol: "TCP" }],
    resources: defaultResources,
    startupProbe: { ...httpProbe, periodSeconds: 2, failureThreshold: 30, timeoutSeconds: 2 },
    readinessProbe: { ...httpProbe, periodSeconds: 5, failureThreshold: 2, timeoutSeconds: 2 },
    livenessProbe: { ...httpProbe, periodSeconds: 10, failureThreshold: 6, timeoutSeconds: 2 },
  };
  return [
    ...httpWorkload(graph, {
      name: EDGE,
      component: "edge",
      container,
      uid: ENVOY_UID,
      port: graph.edge.port,
      // http2, not http: clients' gRPC must stay HTTP/2 from the gateway to Envoy (an
      // `http` port is HTTP/1.1 upstream, which has no trailers). Envoy's listener takes
      // both (codec AUTO), and REST, gRPC-Web and Connect ride HTTP/2 as they are.
      appProtocol: "http2",
    }),
    // No ServiceMonitor: Envoy's admin port is loopback-only; the edge's RED metrics are
    // its sidecar's istio_requests_total, scraped by the mesh-wide Istio PodMonitor.
  ];
}

/**
 * A workload serving one HTTP port named `http`: its ServiceAccount, Deployment, Service
 * and scaling (the edge and the storefront).
 */
function httpWorkload(
  graph: CallGraph,
  w: {
    name: string;
    component: string;
    container: Record<string, unknown>;
    uid: number;
    port: number;
    appProtocol: "http" | "http2";
  },
): K8sObject[] {
  return [
    serviceAccount(graph, w.name),
    deployment(graph, w.name, w.container, w.uid, w.component),
    {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: w.name, namespace: graph.namespace, labels: labels(w.name, w.component) },
      spec: {
        selector: selector(w.name),
        ports: [{ name: "http", port: w.port, targetPort: "http", appProtocol: w.appProtocol }],
      },
    },
    ...scaling(graph, w.name),
  ];
}

/**
 * The storefront: web/dist served by web/server (the Dockerfile's `storefront` target), a
 * Node process that only reads files, so it runs like the services (distroless, uid 65532,
 * read-only root FS). `/` answers 200 with index.html while it serves at all, which is
 * what every probe asks: it has no dependencies a readiness probe could follow.
 */
function storefrontObjects(graph: CallGraph): K8sObject[] {
  const { storefront } = graph;
  const httpProbe = { httpGet: { path: "/", port: "http" } };
  const container = {
    ports: [{ name: "http", containerPort: storefront.port, protocol: "TCP" }],
    // The image sets both too; here they follow the graph's port (and a HOST left to the
    // server's default would be loopback, which the sidecar cannot reach).
    env: [
      { name: "PORT", value: String(storefront.port) },
      { name: "HOST", value: "0.0.0.0" },
    ],
    // Static files from a small process: far below a service's needs.
    resources: {
      requests: { cpu: "50m", memory: "64Mi" },
      limits: { cpu: "500m", memory: "256Mi" },
    },
    startupProbe: { ...httpProbe, periodSeconds: 2, failureThreshold: 15, timeoutSeconds: 2 },
    readinessProbe: { ...httpProbe, periodSeconds: 5, failureThreshold: 2, timeoutSeconds: 2 },
    livenessProbe: { ...httpProbe, periodSeconds: 10, failureThreshold: 3, timeoutSeconds: 2 },
  };
  // No ServiceMonitor: the server has no metrics of its own; its sidecar's
  // istio_requests_total are its RED metrics, like the edge's.
  return httpWorkload(graph, {
    name: STOREFRONT,
    component: "storefront",
    container,
    uid: SERVICE_UID,
    port: storefront.port,
    appProtocol: "http",
  });
}

function serviceAccount(graph: CallGraph, name: string): K8sObject {
  return {
    apiVersion: "v1",
    kind: "ServiceAccount",
    metadata: { name, namespace: graph.namespace, labels: labels(name) },
    automountServiceAccountToken: false,
  };
}

function scaling(graph: CallGraph, name: string): K8sObject[] {
  return [
    {
      apiVersion: "policy/v1",
      kind: "PodDisruptionBudget",
      metadata: { name, namespace: graph.namespace, labels: labels(name) },
      spec: { maxUnavailable: 1, selector: { matchLabels: selector(name) } },
    },
    {
      apiVersion: "autoscaling/v2",
      kind: "HorizontalPodAutoscaler",
      metadata: { name, namespace: graph.namespace, labels: labels(name) },
      spec: {
        scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name },
        minReplicas: 2,
        maxReplicas: 6,
        metrics: [
          {
            type: "Resource",
            resource: { name: "cpu", target: { type: "Utilization", averageUtilization: 70 } },
          },
        ],
      },
    },
  ];
}

/**
 * Prometheus scrapes through mTLS with the Istio certificates its own (outbound-disabled)
 * sidecar writes to /etc/prom-certs, so STRICT holds on the admin port too.
 */
function serviceMonitor(graph: CallGraph, name: string, port: string, path: string): K8sObject {
  return {
    apiVersion: "monitoring.coreos.com/v1",
    kind: "ServiceMonitor",
    metadata: { name, namespace: graph.namespace, labels: labels(name) },
    spec: {
      jobLabel: "app.kubernetes.io/name",
      selector: { matchLabels: selector(name) },
      endpoints: [
        {
          port,
          path,
          interval: "15s",
          // The app's own `service` label (the gRPC service) wins over the target's.
          honorLabels: true,
          scheme: "https",
          tlsConfig: {
            caFile: "/etc/prom-certs/root-cert.pem",
            certFile: "/etc/prom-certs/cert-chain.pem",
            keyFile: "/etc/prom-certs/key.pem",
            insecureSkipVerify: true,
          },
        },
      ],
    },
  };
}

/** Every workload object of deploy/base (services.generated.yaml). */
export function workloadObjects(graph: CallGraph): K8sObject[] {
  return [
    ...[...graph.services.values()].flatMap((svc) => serviceObjects(graph, svc)),
    ...edgeObjects(graph),
    ...storefrontObjects(graph),
  ];
}

// ---------------------------------------------------------------- NetworkPolicies

const dnsEgress = {
  to: [
    {
      namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "kube-system" } },
      podSelector: { matchLabels: { "k8s-app": "kube-dns" } },
    },
  ],
  ports: [
    { protocol: "UDP", port: 53 },
    { protocol: "TCP", port: 53 },
  ],
};
const nsSelector = (ns: string) => ({
  namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": ns } },
});
const podIn = (ns: string, name: string) => ({
  ...nsSelector(ns),
  podSelector: { matchLabels: selector(name) },
});

/**
 * L3/L4 policy under the mesh's L7 one: default deny in both namespaces, then exactly the
 * graph's edges (caller pod → callee gRPC port; the edge → its callees' Connect port too),
 * the JWKS port, the edge → the storefront, the data stores each service uses, DNS,
 * istiod, the ingress gateway to the edge, and Prometheus.
 */
export function networkPolicies(graph: CallGraph): K8sObject[] {
  const { namespace: ns, dataNamespace: dataNs, ports } = graph;
  const out: K8sObject[] = [];
  for (const namespace of [ns, dataNs]) {
    out.push(
      netpol(namespace, "default-deny", {
        podSelector: {},
        policyTypes: ["Ingress", "Egress"],
      }),
      netpol(namespace, "allow-dns-and-istiod", {
        podSelector: {},
        policyTypes: ["Egress"],
        egress: [dnsEgress, { to: [nsSelector("istio-system")] }],
      }),
    );
  }
  const jwksCallers = graph.jwks.callers;
  const pod = (name: string) => ({ podSelector: { matchLabels: selector(name) } });
  const tcp = (port: number) => ({ protocol: "TCP", port });
  for (const name of workloads(graph)) {
    const isEdge = name === EDGE;
    const ingress: unknown[] = [];
    const callers = [...callersOf(graph, name).keys()];
    if (callers.length > 0) {
      ingress.push({ from: callers.map(pod), ports: [tcp(ports.grpc)] });
    }
    // The edge's Connect calls: the same callees on their HTTP port.
    if (graph.edge.calls.has(name) && graph.edge.ports.includes("http")) {
      ingress.push({ from: [pod(EDGE)], ports: [tcp(ports.http)] });
    }
    if (name === STOREFRONT) {
      ingress.push({
        from: graph.storefront.callers.map(pod),
        ports: [tcp(graph.storefront.port)],
      });
    }
    if (name === graph.jwks.service) {
      ingress.push({
        from: [
          ...jwksCallers.map((c) => ({ podSelector: { matchLabels: selector(c) } })),
          // The ingress gateway verifies tokens at the edge of the mesh with the same JWKS.
          nsSelector(INGRESS.namespace),
        ],
        ports: [{ protocol: "TCP", port: ports.http }],
      });
    }
    if (isEdge) {
      ingress.push({
        from: [nsSelector(INGRESS.namespace)],
        ports: [{ protocol: "TCP", port: graph.edge.port }],
      });
    }
    // Only the services have an admin port; every pod has its sidecar's.
    ingress.push({
      from: [nsSelector(MONITORING_NAMESPACE)],
      ports: [...(graph.services.has(name) ? [tcp(ports.admin)] : []), tcp(ISTIO_AGENT_PORT)],
    });
    const egress: unknown[] = [];
    const callees = calleesOf(graph, name);
    if (callees.length > 0) {
      egress.push({
        to: callees.map(pod),
        ports: (isEdge ? edgePorts(graph) : [ports.grpc]).map(tcp),
      });
    }
    if (fetchesStorefront(graph, name)) {
      egress.push({ to: [pod(STOREFRONT)], ports: [tcp(graph.storefront.port)] });
    }
    if (jwksCallers.includes(name) && name !== graph.jwks.service) {
      egress.push({
        to: [{ podSelector: { matchLabels: selector(graph.jwks.service) } }],
        ports: [{ protocol: "TCP", port: ports.http }],
      });
    }
    for (const store of graph.services.get(name)?.uses ?? []) {
      egress.push({
        to: [podIn(dataNs, store)],
        ports: [{ protocol: "TCP", port: DATA_PORTS[store] }],
      });
    }
    out.push(
      netpol(ns, name, {
        podSelector: { matchLabels: selector(name) },
        policyTypes: ["Ingress", "Egress"],
        ingress,
        egress,
      }),
    );
  }
  for (const store of ["postgres", "redis", "nats"] as const) {
    const users = [...graph.services.values()].filter((s) => s.uses.includes(store));
    const ingress: unknown[] = [
      {
        from: users.map((u) => podIn(ns, u.name)),
        ports: [{ protocol: "TCP", port: DATA_PORTS[store] }],
      },
      { from: [nsSelector(MONITORING_NAMESPACE)] },
    ];
    const spec: Record<string, unknown> = {
      podSelector: { matchLabels: selector(store) },
      policyTypes: ["Ingress", "Egress"],
      ingress,
      egress: [],
    };
    if (store === "nats") {
      // JetStream's cluster routes between the three servers.
      const peers = { podSelector: { matchLabels: selector("nats") } };
      ingress.push({ from: [peers], ports: [{ protocol: "TCP", port: 6222 }] });
      spec.egress = [{ to: [peers], ports: [{ protocol: "TCP", port: 6222 }] }];
    }
    out.push(netpol(dataNs, store, spec));
  }
  return out;
}

function netpol(namespace: string, name: string, spec: Record<string, unknown>): K8sObject {
  return {
    apiVersion: "networking.k8s.io/v1",
    kind: "NetworkPolicy",
    metadata: { name, namespace, labels: { "app.kubernetes.io/part-of": PART_OF } },
    spec,
  };
}

// ---------------------------------------------------------------- Istio

const ms = (n: number) => `${n / 1000}s`;

/** The connection pool every destination gets; `h2` says whether HTTP/1.1 is upgraded. */
function connectionPool(h2: "UPGRADE" | "DO_NOT_UPGRADE"): Record<string, unknown> {
  return {
    tcp: { maxConnections: 1024, connectTimeout: "2s" },
    http: {
      http2MaxRequests: 1024,
      http1MaxPendingRequests: 256,
      maxRequestsPerConnection: 0,
      idleTimeout: "300s",
      h2UpgradePolicy: h2,
    },
  };
}

/** DestinationRule per workload: mTLS, connection pools, outlier detection, HTTP/2. */
export function destinationRules(graph: CallGraph): K8sObject[] {
  return workloads(graph).map((name) => {
    const isService = graph.services.has(name);
    return {
      apiVersion: "networking.istio.io/v1",
      kind: "DestinationRule",
      metadata: { name, namespace: graph.namespace, labels: labels(name) },
      spec: {
        host: serviceHost(graph, name),
        trafficPolicy: {
          tls: { mode: "ISTIO_MUTUAL" },
          // The storefront's server is node:http, HTTP/1.1 only. The edge's port is http2
          // already (its Service says why).
          connectionPool: connectionPool(name === STOREFRONT ? "DO_NOT_UPGRADE" : "UPGRADE"),
          outlierDetection: {
            consecutive5xxErrors: 5,
            consecutiveGatewayErrors: 5,
            interval: "10s",
            baseEjectionTime: "30s",
            maxEjectionPercent: 50,
          },
          // The Connect port is HTTP/1.1 on the app side (node:http); it stays HTTP/1.1.
          ...(!isService
            ? {}
            : {
                portLevelSettings: [
                  {
                    port: { number: graph.ports.http },
                    // A port-level connectionPool replaces the whole top-level one (Istio
                    // does not merge them), so it repeats the limits.
                    connectionPool: connectionPool("DO_NOT_UPGRADE"),
                  },
                ],
              }),
        },
      },
    };
  });
}

/** One route of a VirtualService: retries only when `idempotent`, else attempts 0. */
export function methodRoute(
  graph: CallGraph,
  service: string,
  routeName: string,
  match: Record<string, unknown>,
  timeoutMs: number,
  idempotent: boolean,
  port: number,
): Record<string, unknown> {
  // Istio retries by default (2 attempts); a method that must not repeat says attempts 0.
  const retries =
    idempotent && timeoutMs > 0
      ? {
          attempts: RETRY_ATTEMPTS,
          perTryTimeout: ms(Math.floor(timeoutMs / (RETRY_ATTEMPTS + 1))),
          retryOn: RETRY_ON,
        }
      : idempotent
        ? { attempts: RETRY_ATTEMPTS, retryOn: RETRY_ON }
        : { attempts: 0 };
  return {
    name: routeName,
    match: [match],
    timeout: ms(timeoutMs),
    retries,
    route: [{ destination: { host: serviceHost(graph, service), port: { number: port } } }],
  };
}

/** The route name of a method on the Connect port (the gRPC port's is the method's name). */
export const connectRouteName = (method: string): string => `connect-${method}`;

/**
 * VirtualService per workload. A service: a route per gRPC method (timeout, retries iff
 * idempotent), and the same per method the edge calls on the Connect port (else those
 * would fall to the catch-all, whose timeout would cut Connect streams). The edge: from
 * the ingress gateway. The storefront: static reads.
 */
export function virtualServices(graph: CallGraph): K8sObject[] {
  const out: K8sObject[] = [];
  for (const svc of graph.services.values()) {
    const http: unknown[] = [];
    const viaConnect = graph.edge.ports.includes("http") ? graph.edge.calls.get(svc.name) : [];
    for (const [method, spec] of svc.methods) {
      http.push(
        methodRoute(
          graph,
          svc.name,
          method,
          { port: graph.ports.grpc, uri: { exact: methodPath(svc.grpcService, method) } },
          spec.timeoutMs,
          spec.idempotent,
          graph.ports.grpc,
        ),
      );
    }
    // Connect GET carries its request in the query string; Istio's uri match (like the
    // AuthorizationPolicy's paths) sees the path without it.
    for (const [method, spec] of svc.methods) {
      if (!viaConnect?.includes(method)) continue;
      http.push(
        methodRoute(
          graph,
          svc.name,
          connectRouteName(method),
          { port: graph.ports.http, uri: { exact: methodPath(svc.grpcService, method) } },
          spec.timeoutMs,
          spec.idempotent,
          graph.ports.http,
        ),
      );
    }
    if (svc.name === graph.jwks.service) {
      http.push(
        methodRoute(
          graph,
          svc.name,
          "jwks",
          { port: graph.ports.http, method: { exact: "GET" }, uri: { exact: graph.jwks.path } },
          5_000,
          true,
          graph.ports.http,
        ),
      );
    }
    // Everything else (health, reflection, the Connect port): no retries.
    for (const [routeName, port] of [
      ["grpc-other", graph.ports.grpc],
      ["http-other", graph.ports.http],
    ] as const) {
      http.push(methodRoute(graph, svc.name, routeName, { port }, 30_000, false, port));
    }
    out.push({
      apiVersion: "networking.istio.io/v1",
      kind: "VirtualService",
      metadata: { name: svc.name, namespace: graph.namespace, labels: labels(svc.name) },
      spec: { hosts: [serviceHost(graph, svc.name)], http },
    });
  }
  // The edge: from the ingress gateway (REST, gRPC, gRPC-Web, Connect, the storefront) and
  // inside the mesh. Retries are the edge's business (it knows the gRPC method), so none
  // here. Streams (REST's :watch, and the streaming methods under their RPC path, whatever
  // the protocol) have no overall timeout.
  // A fresh copy per route: shared objects would come out as YAML aliases.
  const edgeRoute = () => [
    { destination: { host: serviceHost(graph, EDGE), port: { number: graph.edge.port } } },
  ];
  const streams = [...graph.edge.calls].flatMap(([callee, methods]) => {
    const svc = graph.services.get(callee);
    if (svc === undefined) return [];
    return methods
      .filter((m) => svc.methods.get(m)?.streaming === true)
      .map((m) => ({ uri: { exact: methodPath(svc.grpcService, m) } }));
  });
  out.push({
    apiVersion: "networking.istio.io/v1",
    kind: "VirtualService",
    metadata: { name: EDGE, namespace: graph.namespace, labels: labels(EDGE, "edge") },
    spec: {
      hosts: ["api.meshmart.example", serviceHost(graph, EDGE)],
      gateways: [`${graph.namespace}/edge-gateway`, "mesh"],
      http: [
        {
          name: "watch",
          match: [{ uri: { regex: "^/v1/orders/[^/]+:watch$" } }],
          timeout: "0s",
          retries: { attempts: 0 },
          route: edgeRoute(),
        },
        ...(streams.length > 0
          ? [
              {
                name: "streams",
                match: streams,
                timeout: "0s",
                retries: { attempts: 0 },
                route: edgeRoute(),
              },
            ]
          : []),
        { name: "other", timeout: "60s", retries: { attempts: 0 }, route: edgeRoute() },
      ],
    },
  });
  // The storefront: GET/HEAD of static files, safe to repeat; the edge's own route gives
  // up after 15 s, so this one does too.
  out.push({
    apiVersion: "networking.istio.io/v1",
    kind: "VirtualService",
    metadata: {
      name: STOREFRONT,
      namespace: graph.namespace,
      labels: labels(STOREFRONT, "storefront"),
    },
    spec: {
      hosts: [serviceHost(graph, STOREFRONT)],
      http: [
        {
          name: "static",
          timeout: "15s",
          retries: { attempts: RETRY_ATTEMPTS, perTryTimeout: "5s", retryOn: RETRY_ON },
          route: [
            {
              destination: {
                host: serviceHost(graph, STOREFRONT),
                port: { number: graph.storefront.port },
              },
            },
          ],
        },
      ],
    },
  });
  return out;
}

/**
 * Deny by default in the namespace (an ALLOW policy with no rules matches nothing), then
 * per callee one ALLOW policy whose rules are the graph's callers: their principals and
 * the exact gRPC paths each may call (the edge: the same paths on the Connect port too,
 * POST, and GET for the read-only ones). Plus the JWKS port, the edge from the ingress
 * gateway, the storefront from the edge (GET/HEAD), and Prometheus on the admin port.
 */
export function authorizationPolicies(graph: CallGraph): K8sObject[] {
  const { namespace: ns, ports } = graph;
  const out: K8sObject[] = [
    {
      apiVersion: "security.istio.io/v1",
      kind: "AuthorizationPolicy",
      metadata: {
        name: "deny-by-default",
        namespace: ns,
        labels: { "app.kubernetes.io/part-of": PART_OF },
      },
      spec: {},
    },
  ];
  const metricsRule = {
    from: [{ source: { namespaces: [MONITORING_NAMESPACE] } }],
    to: [{ operation: { ports: [String(ports.admin)], methods: ["GET"], paths: ["/metrics"] } }],
  };
  for (const svc of graph.services.values()) {
    const rules: unknown[] = [];
    for (const [caller, methods] of callersOf(graph, svc.name)) {
      const paths = (list: readonly string[]) => list.map((m) => methodPath(svc.grpcService, m));
      const to: unknown[] = [
        { operation: { ports: [String(ports.grpc)], methods: ["POST"], paths: paths(methods) } },
      ];
      if (caller === EDGE) {
        // The edge's Envoy health-checks its upstreams over gRPC; denied, every host would
        // look unhealthy and the edge would route in panic mode.
        to.push({
          operation: {
            ports: [String(ports.grpc)],
            methods: ["POST"],
            paths: [GRPC_HEALTH_CHECK_PATH],
          },
        });
      }
      if (caller === EDGE && graph.edge.ports.includes("http")) {
        // Connect: POST for every method; GET only where a Connect server takes it.
        const readOnly = readOnlyMethods(svc.grpcService).filter((m) => methods.includes(m));
        to.push({
          operation: { ports: [String(ports.http)], methods: ["POST"], paths: paths(methods) },
        });
        if (readOnly.length > 0) {
          to.push({
            operation: { ports: [String(ports.http)], methods: ["GET"], paths: paths(readOnly) },
          });
        }
      }
      rules.push({ from: [{ source: { principals: [principal(ns, caller)] } }], to });
    }
    if (svc.name === graph.jwks.service) {
      rules.push({
        from: [
          {
            source: {
              principals: [
                ...graph.jwks.callers.map((c) => principal(ns, c)),
                principal(INGRESS.namespace, INGRESS.serviceAccount),
              ],
            },
          },
        ],
        to: [
          {
            operation: { ports: [String(ports.http)], methods: ["GET"], paths: [graph.jwks.path] },
          },
        ],
      });
    }
    rules.push(metricsRule);
    out.push({
      apiVersion: "security.istio.io/v1",
      kind: "AuthorizationPolicy",
      metadata: { name: svc.name, namespace: ns, labels: labels(svc.name) },
      spec: { selector: { matchLabels: selector(svc.name) }, action: "ALLOW", rules },
    });
  }
  out.push({
    apiVersion: "security.istio.io/v1",
    kind: "AuthorizationPolicy",
    metadata: { name: EDGE, namespace: ns, labels: labels(EDGE, "edge") },
    spec: {
      selector: { matchLabels: selector(EDGE) },
      action: "ALLOW",
      rules: [
        {
          from: [
            { source: { principals: [principal(INGRESS.namespace, INGRESS.serviceAccount)] } },
          ],
          to: [{ operation: { ports: [String(graph.edge.port)] } }],
        },
      ],
    },
  });
  out.push({
    apiVersion: "security.istio.io/v1",
    kind: "AuthorizationPolicy",
    metadata: { name: STOREFRONT, namespace: ns, labels: labels(STOREFRONT, "storefront") },
    spec: {
      selector: { matchLabels: selector(STOREFRONT) },
      action: "ALLOW",
      rules: [
        {
          from: [{ source: { principals: graph.storefront.callers.map((c) => principal(ns, c)) } }],
          to: [
            {
              operation: {
                ports: [String(graph.storefront.port)],
                methods: [...graph.storefront.methods],
              },
            },
          ],
        },
      ],
    },
  });
  return out;
}

/**
 * Sidecar per workload: it only knows (and can only reach) its callees, identity's JWKS
 * when it verifies tokens, the storefront when it fetches it, its data stores and
 * istio-system; anything else is REGISTRY_ONLY-blocked (the storefront: istio-system
 * only). A namespace default covers workloads without their own.
 */
export function sidecars(graph: CallGraph): K8sObject[] {
  const { namespace: ns, dataNamespace: dataNs } = graph;
  const out: K8sObject[] = [
    {
      apiVersion: "networking.istio.io/v1",
      kind: "Sidecar",
      metadata: {
        name: "default",
        namespace: ns,
        labels: { "app.kubernetes.io/part-of": PART_OF },
      },
      spec: {
        egress: [{ hosts: ["istio-system/*"] }],
        outboundTrafficPolicy: { mode: "REGISTRY_ONLY" },
      },
    },
  ];
  for (const name of workloads(graph)) {
    const hosts = new Set<string>();
    for (const callee of calleesOf(graph, name)) hosts.add(`./${serviceHost(graph, callee)}`);
    if (fetchesStorefront(graph, name)) hosts.add(`./${serviceHost(graph, STOREFRONT)}`);
    if (graph.jwks.callers.includes(name) && name !== graph.jwks.service) {
      hosts.add(`./${serviceHost(graph, graph.jwks.service)}`);
    }
    for (const store of graph.services.get(name)?.uses ?? []) {
      hosts.add(`${dataNs}/${store}.${dataNs}.svc.cluster.local`);
    }
    hosts.add("istio-system/*");
    out.push({
      apiVersion: "networking.istio.io/v1",
      kind: "Sidecar",
      metadata: { name, namespace: ns, labels: labels(name) },
      spec: {
        workloadSelector: { labels: selector(name) },
        egress: [{ hosts: [...hosts] }],
        outboundTrafficPolicy: { mode: "REGISTRY_ONLY" },
      },
    });
  }
  return out;
}
