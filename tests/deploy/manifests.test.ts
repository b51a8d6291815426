import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import {
  EDGE,
  loadCallGraph,
  methodPath,
  principal,
  publicMethods,
  REPO_ROOT,
  readOnlyMethods,
  STOREFRONT,
} from "../../scripts/deploy/callgraph.js";
import {
  checkAll,
  checkAuthorization,
  checkMeshCoverage,
  checkNetworkPolicies,
  checkNoSecretValues,
  checkRetries,
  checkServicePorts,
  checkSidecars,
  checkWorkloads,
} from "../../scripts/deploy/checks.js";
import {
  connectRouteName,
  GRPC_HEALTH_CHECK_PATH,
  type K8sObject,
  SERVICE_UID,
  TERMINATION_GRACE_S,
} from "../../scripts/deploy/manifests.js";
import {
  countByKind,
  hasKubectl,
  ISTIO_DIR,
  kustomize,
  OVERLAYS,
  overlayDir,
  validateObjects,
} from "../../scripts/deploy/render.js";

// Offline validation (issue §6): render every overlay and istio/ with `kubectl kustomize`,
// validate each object against its schema, run the policy checks, and prove each check
// catches the mistake it is for by mutating the rendered objects.

// biome-ignore lint/suspicious/noExplicitAny: the tests reach into rendered YAML of any shape to mutate it
type Loose = any;

const graph = loadCallGraph();
const kubectl = hasKubectl();
const NO_KUBECTL = "kubectl not found: apt-get install kubectl (renders the Kustomize trees)";

const rendered = new Map<string, K8sObject[]>();
function render(dir: string): K8sObject[] {
  let objects = rendered.get(dir);
  if (objects === undefined) {
    objects = kustomize(dir);
    rendered.set(dir, objects);
  }
  return structuredClone(objects);
}
/** A full deployment: an overlay plus istio/, a fresh copy to mutate. */
const deployment = (overlay: (typeof OVERLAYS)[number] = "prod") => [
  ...render(overlayDir(overlay)),
  ...render(ISTIO_DIR),
];
const find = (objects: K8sObject[], kind: string, name: string, namespace = graph.namespace) => {
  const found = objects.find(
    (o) => o.kind === kind && o.metadata.name === name && o.metadata.namespace === namespace,
  );
  assert.ok(found, `${kind} ${namespace}/${name}`);
  return found as Loose;
};
const container = (objects: K8sObject[], name: string) =>
  find(objects, "Deployment", name).spec.template.spec.containers[0] as Loose;

for (const dir of [...OVERLAYS.map(overlayDir), ISTIO_DIR]) {
  const label = dir.slice(REPO_ROOT.length + 1);
  test(`${label}: every rendered object is valid against its schema`, {
    skip: !kubectl && NO_KUBECTL,
  }, (t) => {
    const objects = render(dir);
    assert.ok(objects.length > 0);
    assert.deepEqual(validateObjects(objects), []);
    t.diagnostic(
      `${label}: ${objects.length} objects validated: ${[...countByKind(objects)].map(([k, n]) => `${k} ${n}`).join(", ")}`,
    );
  });
}

for (const overlay of OVERLAYS) {
  test(`overlay ${overlay} + istio/: every policy check passes`, {
    skip: !kubectl && NO_KUBECTL,
  }, () => {
    assert.deepEqual(checkAll(deployment(overlay), graph), []);
  });
}

test("dev runs one replica, prod three spread over nodes with PDBs keeping two", {
  skip: !kubectl && NO_KUBECTL,
}, () => {
  const dev = deployment("dev");
  const prod = deployment("prod");
  for (const svc of [...graph.services.keys(), EDGE, STOREFRONT]) {
    assert.equal(find(dev, "Deployment", svc).spec.replicas, 1, svc);
    const p = find(prod, "Deployment", svc).spec;
    assert.equal(p.replicas, 3, svc);
    assert.ok(
      p.template.spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution,
    );
    assert.equal(find(prod, "PodDisruptionBudget", svc).spec.minAvailable, 2);
    assert.equal(find(prod, "HorizontalPodAutoscaler", svc).spec.minReplicas, 3);
  }
  assert.equal(find(dev, "StatefulSet", "nats", graph.dataNamespace).spec.replicas, 1);
  assert.equal(find(prod, "StatefulSet", "nats", graph.dataNamespace).spec.replicas, 3);
  assert.equal(find(dev, "ConfigMap", "orders-config").data.STREAM_REPLICAS, "1");
  assert.equal(find(prod, "ConfigMap", "orders-config").data.STREAM_REPLICAS, "3");
});

test("service settings come from the graph: callee URLs, JWKS, the refund callers", {
  skip: !kubectl && NO_KUBECTL,
}, () => {
  const objects = deployment();
  const orders = find(objects, "ConfigMap", "orders-config").data as Record<string, string>;
  assert.equal(orders.CATALOG_URL, `http://catalog.meshmart.svc.cluster.local:${graph.ports.grpc}`);
  assert.equal(
    orders.AUTH_JWKS_URL,
    "http://identity.meshmart.svc.cluster.local:9001/.well-known/jwks.json",
  );
  const payments = find(objects, "ConfigMap", "payments-config").data as Record<string, string>;
  assert.equal(payments.MESH_PEER_IDENTITY, "xfcc");
  assert.equal(payments.REFUND_SERVICE_ACCOUNTS, "orders");
  const grace = find(objects, "Deployment", "orders").spec.template.spec
    .terminationGracePeriodSeconds;
  assert.equal(grace, TERMINATION_GRACE_S);
});

// ---------------------------------------------------------------- the storefront, the edge's Connect port

type Rule = { from: { source: Loose }[]; to: { operation: Loose }[] };
const edgePrincipal = principal(graph.namespace, EDGE);
/** Ingress rules of a workload's NetworkPolicy as `peer port` (peer: workload or ns:<name>). */
const ingressOf = (objects: K8sObject[], name: string): string[] =>
  (find(objects, "NetworkPolicy", name).spec.ingress as Loose[]).flatMap((r) =>
    (r.from as Loose[]).flatMap((peer) =>
      (r.ports as Loose[]).map(
        (p) =>
          `${peer.podSelector?.matchLabels["app.kubernetes.io/name"] ?? `ns:${peer.namespaceSelector?.matchLabels["kubernetes.io/metadata.name"]}`} ${p.port}`,
      ),
    ),
  );

test("the storefront: its own account, HTTP probes on /, non-root read-only, port 8080 named http", {
  skip: !kubectl && NO_KUBECTL,
}, () => {
  for (const overlay of OVERLAYS) {
    const objects = deployment(overlay);
    const pod = find(objects, "Deployment", STOREFRONT).spec.template.spec;
    assert.equal(pod.serviceAccountName, STOREFRONT);
    find(objects, "ServiceAccount", STOREFRONT);
    const c = pod.containers[0];
    assert.equal(c.image, "meshmart/storefront:latest");
    for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
      assert.deepEqual(c[probe].httpGet, { path: "/", port: "http" }, probe);
    }
    assert.deepEqual(c.ports, [{ name: "http", containerPort: 8080, protocol: "TCP" }]);
    assert.equal(c.env.find((e: Loose) => e.name === "PORT").value, String(graph.storefront.port));
    assert.equal(c.env.find((e: Loose) => e.name === "HOST").value, "0.0.0.0");
    // The overlays' resources are for the services and the edge; static files need less.
    assert.deepEqual(c.resources.requests, { cpu: "50m", memory: "64Mi" }, overlay);
    assert.equal(c.securityContext.runAsUser, SERVICE_UID);
    assert.equal(c.securityContext.readOnlyRootFilesystem, true);
    assert.equal(pod.securityContext.runAsNonRoot, true);
    assert.deepEqual(find(objects, "Service", STOREFRONT).spec.ports, [
      { name: "http", port: 8080, targetPort: "http", appProtocol: "http" },
    ]);
    find(objects, "HorizontalPodAutoscaler", STOREFRONT);
    find(objects, "PodDisruptionBudget", STOREFRONT);
    find(objects, "DestinationRule", STOREFRONT);
    find(objects, "VirtualService", STOREFRONT);
  }
});

test("the storefront is reachable only from the edge, with GET and HEAD, and reaches nothing", {
  skip: !kubectl && NO_KUBECTL,
}, () => {
  const objects = deployment();
  const port = graph.storefront.port;
  assert.deepEqual(ingressOf(objects, STOREFRONT).sort(), [`edge ${port}`, "ns:monitoring 15020"]);
  assert.deepEqual(find(objects, "NetworkPolicy", STOREFRONT).spec.egress, []);
  // The edge is the only workload whose NetworkPolicy and Sidecar lead to it.
  const host = `./${STOREFRONT}.${graph.namespace}.svc.cluster.local`;
  for (const pol of objects.filter((o) => o.kind === "NetworkPolicy") as Loose[]) {
    const reaches = (pol.spec.egress ?? []).some((r: Loose) =>
      (r.to ?? []).some(
        (peer: Loose) => peer.podSelector?.matchLabels?.["app.kubernetes.io/name"] === STOREFRONT,
      ),
    );
    assert.equal(reaches, pol.metadata.name === EDGE, `NetworkPolicy ${pol.metadata.name}`);
  }
  for (const sc of objects.filter((o) => o.kind === "Sidecar") as Loose[]) {
    const hosts = sc.spec.egress.flatMap((e: Loose) => e.hosts);
    assert.equal(hosts.includes(host), sc.metadata.name === EDGE, `Sidecar ${sc.metadata.name}`);
  }
  assert.deepEqual(find(objects, "Sidecar", STOREFRONT).spec.egress, [
    { hosts: ["istio-system/*"] },
  ]);
  const rules = find(objects, "AuthorizationPolicy", STOREFRONT).spec.rules as Rule[];
  assert.deepEqual(rules, [
    {
      from: [{ source: { principals: [edgePrincipal] } }],
      to: [{ operation: { ports: [String(port)], methods: ["GET", "HEAD"] } }],
    },
  ]);
  // No other policy names the storefront's port for the edge.
  assert.equal(
    (objects.filter((o) => o.kind === "AuthorizationPolicy") as Loose[]).filter(
      (p) => p.spec.selector?.matchLabels?.["app.kubernetes.io/name"] === STOREFRONT,
    ).length,
    1,
  );
});

test("the edge's Connect port: exactly its published methods, POST, and GET for the read-only ones", {
  skip: !kubectl && NO_KUBECTL,
}, () => {
  const objects = deployment();
  const { grpc, http } = graph.ports;
  assert.deepEqual([...graph.edge.ports], ["grpc", "http"]);
  for (const svc of graph.services.values()) {
    const published = graph.edge.calls.get(svc.name);
    const rules = find(objects, "AuthorizationPolicy", svc.name).spec.rules as Rule[];
    const edgeOps = rules
      .filter((r) => r.from.some((f) => f.source.principals?.includes(edgePrincipal)))
      .flatMap((r) => r.to.map((t) => t.operation));
    const ingress = ingressOf(objects, svc.name);
    if (published === undefined) {
      assert.deepEqual(edgeOps, [], `${svc.name}: the edge does not call it`);
      assert.ok(!ingress.some((i) => i.startsWith("edge ")), svc.name);
      continue;
    }
    const paths = (list: readonly string[]) => list.map((m) => methodPath(svc.grpcService, m));
    assert.deepEqual([...published].sort(), publicMethods(svc.grpcService).sort());
    const on = (port: number, method: string) =>
      edgeOps
        .filter((op) => op.ports.includes(String(port)) && op.methods.includes(method))
        .flatMap((op) => op.paths)
        .filter((path) => path !== GRPC_HEALTH_CHECK_PATH);
    // The edge's Envoy health-checks the gRPC port of everything it routes to.
    assert.ok(
      edgeOps.some(
        (op) => op.ports.includes(String(grpc)) && op.paths.includes(GRPC_HEALTH_CHECK_PATH),
      ),
      `${svc.name}: the edge's health checks are allowed`,
    );
    // The same paths on both ports, and the exact paths, not a prefix.
    assert.deepEqual(on(grpc, "POST"), paths(published), svc.name);
    assert.deepEqual(on(http, "POST"), paths(published), svc.name);
    const readOnly = readOnlyMethods(svc.grpcService).filter((m) => published.includes(m));
    assert.ok(readOnly.length > 0, `${svc.name} publishes a read-only method`);
    // identity's HTTP port also serves the JWKS, which the edge fetches (its own rule).
    const jwks =
      svc.name === graph.jwks.service && graph.jwks.callers.includes(EDGE) ? [graph.jwks.path] : [];
    assert.deepEqual(on(http, "GET"), [...paths(readOnly), ...jwks], svc.name);
    assert.deepEqual(on(grpc, "GET"), [], `${svc.name}: gRPC is POST only`);
    for (const op of edgeOps) assert.ok(op.paths.every((p: string) => !p.includes("*")));
    // L4: the edge reaches the pods on both ports.
    assert.ok(ingress.includes(`edge ${grpc}`) && ingress.includes(`edge ${http}`), svc.name);
    // Each Connect method has its own route (a timeout; no retries unless idempotent).
    const routes = find(objects, "VirtualService", svc.name).spec.http as Loose[];
    for (const m of published) {
      const route = routes.find((r) => r.name === connectRouteName(m));
      assert.ok(route, `${svc.name}: route ${connectRouteName(m)}`);
      assert.deepEqual(route.match, [
        { port: http, uri: { exact: methodPath(svc.grpcService, m) } },
      ]);
      assert.equal(route.route[0].destination.port.number, http);
      const grpcRoute = routes.find((r) => r.name === m);
      assert.equal(route.timeout, grpcRoute.timeout, `${svc.name}.${m}`);
      assert.deepEqual(route.retries, grpcRoute.retries, `${svc.name}.${m}`);
    }
  }
  // The edge's own egress: the callees on both ports, the storefront, the JWKS; no more.
  const egress = (find(objects, "NetworkPolicy", EDGE).spec.egress as Loose[]).flatMap((r) =>
    (r.to as Loose[]).flatMap((peer) =>
      (r.ports as Loose[]).map(
        (p) => `${peer.podSelector.matchLabels["app.kubernetes.io/name"]} ${p.port}`,
      ),
    ),
  );
  const expected = [...graph.edge.calls.keys()].flatMap((c) => [`${c} ${grpc}`, `${c} ${http}`]);
  assert.deepEqual(
    [...new Set(egress)].sort(),
    [...expected, `${STOREFRONT} ${graph.storefront.port}`].sort(),
  );
  const sidecar = find(objects, "Sidecar", EDGE).spec.egress[0].hosts as string[];
  assert.deepEqual(
    [...sidecar].sort(),
    [
      ...[...graph.edge.calls.keys()].map((c) => `./${c}.meshmart.svc.cluster.local`),
      "./storefront.meshmart.svc.cluster.local",
      "istio-system/*",
    ].sort(),
  );
});

test("the edge's streams have no timeout at the gateway, and gRPC stays HTTP/2 up to Envoy", {
  skip: !kubectl && NO_KUBECTL,
}, () => {
  const objects = deployment();
  const routes = find(objects, "VirtualService", EDGE).spec.http as Loose[];
  const streams = routes.find((r) => r.name === "streams");
  assert.deepEqual(streams.match, [
    { uri: { exact: methodPath("meshmart.orders.v1.OrderService", "WatchOrder") } },
  ]);
  assert.equal(streams.timeout, "0s");
  assert.ok(routes.indexOf(streams) < routes.findIndex((r) => r.match === undefined));
  assert.equal(find(objects, "Service", EDGE).spec.ports[0].appProtocol, "http2");
});

test("the schema validators reject a malformed object", { skip: !kubectl && NO_KUBECTL }, () => {
  const objects = deployment();
  find(objects, "Deployment", "catalog").spec.replicas = "two";
  find(objects, "DestinationRule", "catalog").spec.trafficPolicy.tls.mode = "MAYBE";
  find(objects, "AuthorizationPolicy", "payments").spec.action = "PERMIT";
  const problems = validateObjects(objects);
  assert.equal(problems.length, 3, problems.join("\n"));
  assert.match(problems.join("\n"), /Deployment meshmart\/catalog/);
  assert.match(problems.join("\n"), /DestinationRule meshmart\/catalog/);
  assert.match(problems.join("\n"), /AuthorizationPolicy meshmart\/payments/);
  assert.match(
    validateObjects([
      { apiVersion: "example.com/v1", kind: "Widget", metadata: { name: "w" } },
    ])[0] ?? "",
    /no schema/,
  );
});

// ---------------------------------------------------------------- mutation tests

const M = { skip: !kubectl && NO_KUBECTL };

test("mutation: a removed probe is caught", M, () => {
  const objects = deployment();
  delete container(objects, "payments").readinessProbe;
  assert.match(
    checkWorkloads(objects, graph).join("\n"),
    /payments container app: no readinessProbe/,
  );
  const again = deployment();
  delete find(again, "StatefulSet", "postgres", graph.dataNamespace).spec.template.spec
    .containers[0].livenessProbe;
  assert.match(checkAll(again, graph).join("\n"), /postgres container postgres: no livenessProbe/);
  const http = deployment();
  container(http, "orders").livenessProbe = { httpGet: { path: "/", port: 9001 } };
  assert.match(checkWorkloads(http, graph).join("\n"), /livenessProbe is not grpc.health.v1/);
  // Liveness on the readiness name: a database outage would restart every pod.
  const readinessBound = deployment();
  container(readinessBound, "orders").livenessProbe = { grpc: { port: graph.ports.grpc } };
  assert.match(
    checkWorkloads(readinessBound, graph).join("\n"),
    /livenessProbe must ask the "liveness" health name/,
  );
});

test("mutation: missing limits, root, writable FS, short grace are caught", M, () => {
  const objects = deployment();
  delete container(objects, "catalog").resources.limits;
  container(objects, "identity").securityContext.readOnlyRootFilesystem = false;
  find(objects, "Deployment", "inventory").spec.template.spec.securityContext.runAsNonRoot = false;
  delete container(objects, "inventory").securityContext.runAsNonRoot;
  find(objects, "Deployment", "orders").spec.template.spec.terminationGracePeriodSeconds = 10;
  const problems = checkWorkloads(objects, graph).join("\n");
  assert.match(problems, /catalog container app: no limits.cpu/);
  assert.match(problems, /identity container app: root filesystem is writable/);
  assert.match(problems, /inventory container app: not runAsNonRoot/);
  assert.match(problems, /orders: terminationGracePeriodSeconds 10/);
});

test("mutation: retries on a method that is not idempotent are caught", M, () => {
  const objects = deployment();
  const vs = find(objects, "VirtualService", "identity");
  const login = vs.spec.http.find((r: { name: string }) => r.name === "Login");
  login.retries = { attempts: 2, perTryTimeout: "3s", retryOn: "unavailable" };
  assert.match(
    checkRetries(objects, graph).join("\n"),
    /non-idempotent Login must have retries.attempts 0/,
  );
  // Leaving retries out is no better: Istio's default policy retries.
  const omitted = deployment();
  delete find(omitted, "VirtualService", "identity").spec.http.find(
    (r: { name: string }) => r.name === "RefreshToken",
  ).retries;
  assert.match(
    checkRetries(omitted, graph).join("\n"),
    /RefreshToken must have retries.attempts 0/,
  );
  // The classification is the graph's: flip Login to idempotent and the same route passes.
  const relaxed = loadCallGraph(
    (() => {
      const text = readFileSync(join(REPO_ROOT, "deploy/callgraph.yaml"), "utf8");
      return text.replace("Login: { idempotent: false", "Login: { idempotent: true");
    })(),
  );
  assert.doesNotMatch(checkRetries(objects, relaxed).join("\n"), /Login/);
});

test(
  "mutation: unbounded retries, retries on other conditions, a missing timeout are caught",
  M,
  () => {
    const objects = deployment();
    const routes = find(objects, "VirtualService", "payments").spec.http as Loose[];
    const get = (name: string) => routes.find((r) => r.name === name) as Loose;
    get("GetPayment").retries.attempts = 10;
    get("CapturePayment").retries.retryOn = "5xx,unavailable";
    delete get("VoidPayment").timeout;
    delete get("RefundPayment").retries.perTryTimeout;
    routes.splice(routes.indexOf(get("AuthorizePayment")), 1);
    const problems = checkRetries(objects, graph).join("\n");
    assert.match(problems, /GetPayment: retries.attempts must be 0..3/);
    assert.match(problems, /CapturePayment: retries on "5xx"/);
    assert.match(problems, /VoidPayment: no timeout/);
    assert.match(problems, /RefundPayment: retries without perTryTimeout/);
    assert.match(problems, /method AuthorizePayment has no route/);
  },
);

test("mutation: an AuthorizationPolicy allowing a caller not in the graph is caught", M, () => {
  const objects = deployment();
  const payments = find(objects, "AuthorizationPolicy", "payments");
  payments.spec.rules[0].from[0].source.principals.push(
    principal(graph.namespace, "notifications"),
  );
  assert.match(
    checkAuthorization(objects, graph).join("\n"),
    /allows cluster.local\/ns\/meshmart\/sa\/notifications to POST payments:9000\/meshmart.payments.v1.PaymentService\/AuthorizePayment/,
  );
  // A method the caller does not call, for a caller the graph has.
  const extraMethod = deployment();
  find(extraMethod, "AuthorizationPolicy", "inventory").spec.rules[0].to[0].operation.paths.push(
    methodPath("meshmart.inventory.v1.InventoryService", "SetStock"),
  );
  assert.match(
    checkAuthorization(extraMethod, graph).join("\n"),
    /InventoryService\/SetStock, which deploy\/callgraph.yaml does not declare/,
  );
  // The edge reaching an internal method.
  const edge = deployment();
  find(edge, "AuthorizationPolicy", "inventory").spec.rules.push({
    from: [{ source: { principals: [principal(graph.namespace, "edge")] } }],
    to: [
      {
        operation: { ports: ["9000"], paths: ["/meshmart.inventory.v1.InventoryService/SetStock"] },
      },
    ],
  });
  assert.match(checkAuthorization(edge, graph).join("\n"), /sa\/edge to any method inventory:9000/);
  // Allow-from-anyone and allow-any-method rules.
  const open = deployment();
  find(open, "AuthorizationPolicy", "catalog").spec.rules.push({
    to: [{ operation: { ports: ["9000"] } }],
  });
  find(open, "AuthorizationPolicy", "orders").spec.rules.push({
    from: [{ source: { principals: ["*"] } }],
  });
  const problems = checkAuthorization(open, graph).join("\n");
  assert.match(problems, /catalog: a rule must name its sources/);
  assert.match(problems, /orders: a rule without operations allows every method/);
});

test(
  "mutation: a call of the graph that no policy allows is caught, and deny-by-default must exist",
  M,
  () => {
    const objects = deployment();
    const catalog = find(objects, "AuthorizationPolicy", "catalog");
    catalog.spec.rules = catalog.spec.rules.filter(
      (r: Loose) => !r.from[0].source.principals?.includes(principal(graph.namespace, "orders")),
    );
    assert.match(
      checkAuthorization(objects, graph).join("\n"),
      /sa\/orders 9000 POST \/meshmart.catalog.v1.CatalogService\/GetProduct is not allowed/,
    );
    const noDeny = deployment().filter((o) => o.metadata.name !== "deny-by-default");
    assert.match(
      checkMeshCoverage(noDeny, graph).join("\n"),
      /no deny-by-default AuthorizationPolicy/,
    );
  },
);

test(
  "mutation: missing DestinationRule, outlierDetection, VirtualService, Sidecar; PERMISSIVE mTLS",
  M,
  () => {
    const objects = deployment().filter(
      (o) =>
        !(o.kind === "VirtualService" && o.metadata.name === "notifications") &&
        !(o.kind === "Sidecar" && o.metadata.name === "catalog"),
    );
    delete find(objects, "DestinationRule", "orders").spec.trafficPolicy.outlierDetection;
    find(objects, "PeerAuthentication", "default", "meshmart").spec.mtls.mode = "PERMISSIVE";
    const problems = checkMeshCoverage(objects, graph).join("\n");
    assert.match(problems, /orders: outlierDetection has no consecutive5xxErrors/);
    assert.match(problems, /notifications: no VirtualService/);
    assert.match(problems, /catalog: no Sidecar/);
    assert.match(problems, /meshmart: PeerAuthentication is not STRICT/);
  },
);

test("mutation: a NetworkPolicy or Sidecar opening a path the graph lacks is caught", M, () => {
  const objects = deployment();
  const inventory = find(objects, "NetworkPolicy", "inventory");
  inventory.spec.ingress[0].from.push({
    podSelector: { matchLabels: { "app.kubernetes.io/name": "catalog" } },
  });
  find(objects, "Sidecar", "notifications").spec.egress[0].hosts.push(
    "./payments.meshmart.svc.cluster.local",
  );
  assert.match(
    checkNetworkPolicies(objects, graph).join("\n"),
    /NetworkPolicy meshmart\/inventory: admits catalog on port 9000, which deploy\/callgraph.yaml does not declare/,
  );
  assert.match(
    checkSidecars(objects, graph).join("\n"),
    /egress to .\/payments.meshmart.svc.cluster.local is not in the graph/,
  );
  const noDeny = deployment().filter(
    (o) => !(o.kind === "NetworkPolicy" && o.metadata.name === "default-deny"),
  );
  assert.match(
    checkNetworkPolicies(noDeny, graph).join("\n"),
    /meshmart: no default-deny NetworkPolicy/,
  );
});

test("mutation: the storefront opened to another caller, method or path is caught", M, () => {
  const objects = deployment();
  const ap = find(objects, "AuthorizationPolicy", STOREFRONT).spec.rules[0];
  ap.from[0].source.principals.push(principal(graph.namespace, "orders"));
  ap.to[0].operation.methods.push("POST");
  const problems = checkAuthorization(objects, graph).join("\n");
  assert.match(
    problems,
    /allows cluster.local\/ns\/meshmart\/sa\/orders to GET storefront:8080 \(any path\)/,
  );
  assert.match(problems, /allows cluster.local\/ns\/meshmart\/sa\/edge to POST storefront:8080/);
  const open = deployment();
  delete find(open, "AuthorizationPolicy", STOREFRONT).spec.rules[0].to[0].operation.methods;
  assert.match(
    checkAuthorization(open, graph).join("\n"),
    /allows cluster.local\/ns\/meshmart\/sa\/edge to any method storefront:8080/,
  );
  const net = deployment();
  find(net, "NetworkPolicy", STOREFRONT).spec.ingress[0].from.push({
    podSelector: { matchLabels: { "app.kubernetes.io/name": "catalog" } },
  });
  find(net, "NetworkPolicy", "catalog").spec.egress.push({
    to: [{ podSelector: { matchLabels: { "app.kubernetes.io/name": STOREFRONT } } }],
    ports: [{ protocol: "TCP", port: 8080 }],
  });
  find(net, "Sidecar", STOREFRONT).spec.egress[0].hosts.push(
    "./catalog.meshmart.svc.cluster.local",
  );
  const netProblems = checkNetworkPolicies(net, graph).join("\n");
  assert.match(netProblems, /NetworkPolicy meshmart\/storefront: admits catalog on port 8080/);
  assert.match(
    netProblems,
    /NetworkPolicy meshmart\/catalog: lets it reach storefront on port 8080/,
  );
  assert.match(
    checkSidecars(net, graph).join("\n"),
    /Sidecar meshmart\/storefront: egress to .\/catalog.meshmart.svc.cluster.local is not in the graph/,
  );
  // Dropping the edge's allow is caught too: the storefront would be unreachable.
  const closed = deployment().filter(
    (o) => !(o.kind === "AuthorizationPolicy" && o.metadata.name === STOREFRONT),
  );
  assert.match(checkMeshCoverage(closed, graph).join("\n"), /storefront: no AuthorizationPolicy/);
  assert.match(
    checkAuthorization(closed, graph).join("\n"),
    /storefront: the graph's cluster.local\/ns\/meshmart\/sa\/edge 8080 GET \* is not allowed/,
  );
});

test("mutation: the edge's Connect port opened beyond its published methods is caught", M, () => {
  const objects = deployment();
  const orders = find(objects, "AuthorizationPolicy", "orders").spec.rules as Rule[];
  const edgeRule = orders.find((r) => r.from[0]?.source.principals?.includes(edgePrincipal));
  assert.ok(edgeRule);
  // GET for a method that has side effects (a Connect server refuses it; the mesh must too).
  const get = edgeRule.to.find((t) => t.operation.methods.includes("GET"));
  get?.operation.paths.push(methodPath("meshmart.orders.v1.OrderService", "PlaceOrder"));
  // An internal method of a service the edge calls nothing of.
  find(objects, "AuthorizationPolicy", "payments").spec.rules.push({
    from: [{ source: { principals: [edgePrincipal] } }],
    to: [
      {
        operation: {
          ports: ["9001"],
          methods: ["POST"],
          paths: [methodPath("meshmart.payments.v1.PaymentService", "GetPayment")],
        },
      },
    ],
  });
  // A prefix instead of the exact paths.
  const catalogConnect = (find(objects, "AuthorizationPolicy", "catalog").spec.rules as Rule[])
    .find((r) => r.from[0]?.source.principals?.includes(edgePrincipal))
    ?.to.find((t) => t.operation.ports.includes("9001") && t.operation.methods.includes("POST"));
  assert.ok(catalogConnect);
  catalogConnect.operation.paths = ["/meshmart.catalog.v1.CatalogService/*"];
  const problems = checkAuthorization(objects, graph).join("\n");
  assert.match(
    problems,
    /sa\/edge to GET orders:9001\/meshmart.orders.v1.OrderService\/PlaceOrder/,
  );
  assert.match(
    problems,
    /sa\/edge to POST payments:9001\/meshmart.payments.v1.PaymentService\/GetPayment/,
  );
  assert.match(problems, /sa\/edge to POST catalog:9001\/meshmart.catalog.v1.CatalogService\/\*/);
  assert.match(
    problems,
    /catalog: the graph's cluster.local\/ns\/meshmart\/sa\/edge 9001 POST \/meshmart.catalog.v1.CatalogService\/GetProduct is not allowed/,
  );
  // L4: the Connect port open to the edge where it calls nothing, or closed where it does.
  const net = deployment();
  find(net, "NetworkPolicy", "inventory").spec.ingress.push({
    from: [{ podSelector: { matchLabels: { "app.kubernetes.io/name": EDGE } } }],
    ports: [{ protocol: "TCP", port: 9001 }],
  });
  const edgeEgress = find(net, "NetworkPolicy", EDGE).spec.egress[0];
  edgeEgress.ports = edgeEgress.ports.filter((p: Loose) => p.port !== 9001);
  const netProblems = checkNetworkPolicies(net, graph).join("\n");
  assert.match(netProblems, /NetworkPolicy meshmart\/inventory: admits edge on port 9001/);
  assert.match(
    netProblems,
    /NetworkPolicy meshmart\/edge: does not let it reach catalog on port 9001/,
  );
  // A Connect stream left to the catch-all route would be cut at its timeout.
  const vs = deployment();
  const routes = find(vs, "VirtualService", "orders").spec.http as Loose[];
  routes.splice(
    routes.findIndex((r) => r.name === connectRouteName("WatchOrder")),
    1,
  );
  assert.match(
    checkRetries(vs, graph).join("\n"),
    /orders: method WatchOrder has no route on the Connect port 9001/,
  );
});

test(
  "mutation: a NetworkPolicy rule without peers or ports, or with a foreign peer, is caught",
  M,
  () => {
    const objects = deployment();
    find(objects, "NetworkPolicy", "payments").spec.ingress.push({
      ports: [{ protocol: "TCP", port: 9000 }],
    });
    find(objects, "NetworkPolicy", "catalog").spec.egress.push({
      to: [{ ipBlock: { cidr: "0.0.0.0/0" } }],
      ports: [{ protocol: "TCP", port: 443 }],
    });
    const problems = checkNetworkPolicies(objects, graph).join("\n");
    assert.match(
      problems,
      /payments: an ingress rule must name its peers and ports \(it opens every peer\)/,
    );
    assert.match(problems, /catalog: egress peer \{"ipBlock".*is not a workload of the graph/);
  },
);

test("mutation: Secret values, literal keys, unnamed ports are caught", M, () => {
  const objects = deployment();
  objects.push({
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name: "orders-keys", namespace: "meshmart" },
    data: { "saga-card-key": "c2VjcmV0" },
  });
  container(objects, "orders").env.push({ name: "SAGA_CARD_KEY", value: "AAAA" });
  container(objects, "catalog").env.find((e: { name: string }) => e.name === "DATABASE_URL").value =
    "postgres://catalog:hunter2@postgres:5432/catalog";
  delete find(objects, "Service", "payments").spec.ports[1].name;
  const problems = checkNoSecretValues(objects).join("\n");
  assert.match(problems, /Secret meshmart\/orders-keys: has values/);
  assert.match(problems, /SAGA_CARD_KEY is set literally/);
  assert.match(problems, /DATABASE_URL has a literal password/);
  assert.match(
    checkServicePorts(objects).join("\n"),
    /Service meshmart\/payments: port 9001 has no name/,
  );
});

// ---------------------------------------------------------------- alert rules

const promtool = (() => {
  try {
    execFileSync("promtool", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();
const NO_PROMTOOL =
  "promtool not found: apt-get install prometheus (checks and unit-tests the alert rules)";
const rulesDir = join(REPO_ROOT, "deploy/base/observability");

test("promtool check rules: the alert rules are valid", { skip: !promtool && NO_PROMTOOL }, () => {
  const out = execFileSync("promtool", ["check", "rules", "rules.yaml"], {
    cwd: rulesDir,
    encoding: "utf8",
  });
  assert.match(out, /SUCCESS: \d+ rules found/);
});

test("promtool test rules: every alert fires and stays quiet when it should", {
  skip: !promtool && NO_PROMTOOL,
}, () => {
  const out = execFileSync("promtool", ["test", "rules", "rules.test.yaml"], {
    cwd: rulesDir,
    encoding: "utf8",
  });
  assert.match(out, /SUCCESS/);
  const rules = readFileSync(join(rulesDir, "rules.yaml"), "utf8");
  const tests = readFileSync(join(rulesDir, "rules.test.yaml"), "utf8");
  for (const [, alert] of rules.matchAll(/- alert: (\w+)/g)) {
    const cases = [...tests.matchAll(new RegExp(`alertname: ${alert}\\n\\s+exp_alerts:(.*)`, "g"))];
    assert.ok(
      cases.some((c) => c[1]?.trim() === "[]"),
      `${alert}: no not-firing case`,
    );
    assert.ok(
      cases.some((c) => c[1]?.trim() === ""),
      `${alert}: no firing case`,
    );
  }
});

test("the dashboard is valid Grafana JSON covering RED, saga outcomes and consumer lag", () => {
  const text = readFileSync(join(rulesDir, "grafana-dashboard.json"), "utf8");
  const dashboard = JSON.parse(text) as {
    uid: string;
    panels: { title: string; targets?: { expr: string }[] }[];
  };
  assert.equal(dashboard.uid, "meshmart-red");
  const exprs = dashboard.panels
    .flatMap((p) => p.targets ?? [])
    .map((t) => t.expr)
    .join("\n");
  for (const metric of [
    "rpc_requests_total",
    "rpc_request_duration_seconds_bucket",
    "orders_finished_total",
    "consumer_pending",
    "outbox_lag_seconds",
  ]) {
    assert.ok(exprs.includes(metric), metric);
  }
  assert.ok(exprs.includes("by (job, method"), "per-method panels");
});
