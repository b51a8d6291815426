/**
 * The local sidecars say what the cluster's Istio objects say, field by field: every
 * Envoy setting of every generated sidecar is compared with its counterpart in the
 * committed istio/*.generated.yaml (which tests/deploy keeps equal to the generator) and
 * with deploy/callgraph.yaml itself, so the two outputs cannot drift apart.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { parseAllDocuments } from "yaml";
import { EDGE, loadCallGraph, methodPath, REPO_ROOT } from "../../scripts/deploy/callgraph.js";
import { allowedAccess } from "../../scripts/deploy/checks.js";
import { INGRESS, type K8sObject, virtualServices } from "../../scripts/deploy/manifests.js";
import { type LocalMesh, type MeshInstance, planLocalMesh } from "../../scripts/mesh/local-mesh.js";
import {
  type IstioPolicy,
  istioPolicy,
  outboundCluster,
  sidecarBootstrap,
} from "../../scripts/mesh/sidecar-config.js";

// biome-ignore lint/suspicious/noExplicitAny: Envoy and Istio JSON, read field by field.
type Json = any;

const graph = loadCallGraph();
const NS = graph.namespace;
const PORTS = [graph.ports.grpc, graph.ports.http] as const;

function generated(file: string): K8sObject[] {
  const text = readFileSync(join(REPO_ROOT, "istio", file), "utf8");
  return parseAllDocuments(text)
    .map((d) => d.toJSON() as K8sObject | null)
    .filter((o): o is K8sObject => o !== null);
}

/** The policy as committed for the cluster, read back from its YAML. */
const committed: IstioPolicy = {
  namespace: NS,
  destinationRules: generated("destination-rules.generated.yaml"),
  virtualServices: generated("virtual-services.generated.yaml"),
  authorizationPolicies: generated("authorization-policies.generated.yaml"),
  sidecars: generated("sidecars.generated.yaml"),
};

let dir: string;
let mesh: LocalMesh;
const configs = new Map<string, Json>();

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "meshmart-sidecar-config-"));
  let port = 20_000;
  mesh = await planLocalMesh({
    services: [...graph.services.keys()],
    replicas: (s) => (s === "catalog" || s === "payments" ? 2 : 1),
    edge: true,
    dir,
    // Nothing listens: the configs are only read.
    freePort: async () => port++,
    policy: committed,
  });
  for (const i of mesh.instances) {
    configs.set(i.instance, JSON.parse(readFileSync(i.configFile, "utf8")));
  }
});

after(() => {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

const spec = (o: K8sObject): Json => (o as Json).spec;
const byName = (objects: K8sObject[], name: string) => {
  const found = objects.find((o) => o.metadata.name === name);
  assert.ok(found, name);
  return spec(found);
};
const listeners = (i: MeshInstance): Json[] => configs.get(i.instance).static_resources.listeners;
const clusters = (i: MeshInstance): Json[] => configs.get(i.instance).static_resources.clusters;
const hcmOf = (listener: Json): Json => listener.filter_chains[0].filters[0].typed_config;
const host = (service: string) => `${service}.${NS}.svc.cluster.local`;

test("the committed YAML is what the generator writes (the translation reads the cluster's policy)", () => {
  const fresh = istioPolicy(graph);
  assert.deepEqual(committed.virtualServices, JSON.parse(JSON.stringify(fresh.virtualServices)));
  assert.deepEqual(committed.destinationRules, JSON.parse(JSON.stringify(fresh.destinationRules)));
});

test("egress: each sidecar has outbound listeners for exactly its Sidecar's hosts", () => {
  for (const i of mesh.instances) {
    const egress = (byName(committed.sidecars, i.workload).egress[0].hosts as string[])
      .filter((h) => h.startsWith("./"))
      .map((h) => h.slice(2));
    const outbound = listeners(i)
      .filter((l) => l.name.startsWith("outbound|"))
      .map((l) => l.name.split("||")[1]);
    const expected = egress
      .filter((h) => graph.services.has(h.split(".")[0] ?? ""))
      .flatMap((h) => [h, h]);
    assert.deepEqual(outbound.sort(), expected.sort(), i.instance);
  }
});

describe("routes: the VirtualServices' timeouts and retries, per method and port", () => {
  test("every outbound route equals its VirtualService route", () => {
    let compared = 0;
    for (const i of mesh.instances) {
      for (const listener of listeners(i).filter((l) => l.name.startsWith("outbound|"))) {
        const [, port, , hostname] = listener.name.split("|");
        const service = String(hostname).split(".")[0] ?? "";
        const vs = byName(committed.virtualServices, service).http as Json[];
        const expected = vs.filter(
          (r) =>
            r.match === undefined ||
            r.match.some((m: Json) => m.port === undefined || m.port === Number(port)),
        );
        const routes = hcmOf(listener).route_config.virtual_hosts[0].routes as Json[];
        assert.deepEqual(
          routes.map((r) => r.name),
          expected.map((r) => r.name),
          `${i.instance} → ${service}:${port}`,
        );
        routes.forEach((route, n) => {
          const istio = expected[n];
          const where = `${i.instance} → ${service}:${port} ${istio.name}`;
          const uri = istio.match?.[0]?.uri;
          if (uri?.exact !== undefined) assert.equal(route.match.path, uri.exact, where);
          else assert.equal(route.match.prefix, "/", where);
          if (istio.match?.[0]?.method?.exact !== undefined) {
            assert.deepEqual(route.match.headers, [
              { name: ":method", string_match: { exact: istio.match[0].method.exact } },
            ]);
          }
          assert.equal(route.route.timeout, istio.timeout, where);
          assert.deepEqual(
            route.route.max_stream_duration,
            { max_stream_duration: istio.timeout, grpc_timeout_header_max: istio.timeout },
            where,
          );
          assert.equal(
            route.route.cluster,
            outboundCluster(NS, service, istio.route[0].destination.port.number),
            where,
          );
          const retry = route.route.retry_policy;
          if (istio.retries.attempts === 0) {
            assert.equal(retry, undefined, `${where}: no retries`);
          } else {
            assert.equal(retry.num_retries, istio.retries.attempts, where);
            assert.equal(retry.retry_on, istio.retries.retryOn, where);
            assert.equal(retry.per_try_timeout, istio.retries.perTryTimeout, where);
            assert.equal(
              retry.retry_host_predicate[0].name,
              "envoy.retry_host_predicates.previous_hosts",
            );
          }
          compared += 1;
        });
      }
    }
    assert.ok(compared > 100, `compared ${compared} routes`);
  });

  test("against the graph itself: a method not idempotent is never retried, and its timeout holds", () => {
    for (const [caller, callees] of [
      ...[...graph.services.values()].map((s) => [s.name, s.calls] as const),
      [EDGE, graph.edge.calls] as const,
    ]) {
      const i = mesh.instancesOf(caller)[0];
      assert.ok(i, caller);
      for (const [callee, methods] of callees) {
        const svc = graph.services.get(callee);
        assert.ok(svc);
        const listener = listeners(i).find(
          (l) => l.name === `outbound|${graph.ports.grpc}||${host(callee)}`,
        );
        const routes = hcmOf(listener).route_config.virtual_hosts[0].routes as Json[];
        for (const method of methods) {
          const m: Json = svc.methods.get(method);
          const route: Json = routes.find(
            (r) => r.match.path === methodPath(svc.grpcService, method),
          );
          assert.ok(m && route, `${caller} → ${callee}.${method}`);
          assert.equal(route.route.timeout, `${m.timeoutMs / 1000}s`, `${caller} → ${method}`);
          assert.equal(
            route.route.retry_policy !== undefined,
            m.idempotent && true,
            `${caller} → ${method} retried iff idempotent`,
          );
        }
      }
    }
  });
});

test("clusters: the DestinationRules' mTLS, pools and outlier detection, port by port", () => {
  for (const i of mesh.instances) {
    for (const cluster of clusters(i).filter((c) => c.name.startsWith("outbound|"))) {
      const [, port, , hostname] = cluster.name.split("|");
      const service = String(hostname).split(".")[0] ?? "";
      const where = `${i.instance} ${cluster.name}`;
      const tp = byName(committed.destinationRules, service).trafficPolicy;
      // Istio's merge: a port-level connectionPool replaces the top-level one.
      const level = (tp.portLevelSettings ?? []).find((p: Json) => p.port.number === Number(port));
      const pool = level?.connectionPool ?? tp.connectionPool;
      assert.equal(tp.tls.mode, "ISTIO_MUTUAL");
      assert.equal(cluster.connect_timeout, pool.tcp.connectTimeout, where);
      const limits = cluster.circuit_breakers.thresholds[0];
      assert.equal(limits.max_connections, pool.tcp.maxConnections, where);
      assert.equal(limits.max_pending_requests, pool.http.http1MaxPendingRequests, where);
      assert.equal(limits.max_requests, pool.http.http2MaxRequests, where);
      const protocol =
        cluster.typed_extension_protocol_options[
          "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ];
      assert.equal(
        protocol.common_http_protocol_options.idle_timeout,
        pool.http.idleTimeout,
        where,
      );
      assert.equal(
        "http2_protocol_options" in protocol.explicit_http_config,
        pool.http.h2UpgradePolicy === "UPGRADE",
        `${where}: HTTP/2 iff h2UpgradePolicy UPGRADE`,
      );
      const od = tp.outlierDetection;
      const outlier = cluster.outlier_detection;
      assert.equal(outlier.consecutive_5xx, od.consecutive5xxErrors, where);
      assert.equal(outlier.consecutive_gateway_failure, od.consecutiveGatewayErrors, where);
      assert.equal(outlier.interval, od.interval, where);
      assert.equal(outlier.base_ejection_time, od.baseEjectionTime, where);
      assert.equal(outlier.max_ejection_percent, od.maxEjectionPercent, where);
      const tls = cluster.transport_socket.typed_config.common_tls_context;
      assert.deepEqual(tls.validation_context.match_typed_subject_alt_names, [
        { san_type: "URI", matcher: { exact: `spiffe://cluster.local/ns/${NS}/sa/${service}` } },
      ]);
      assert.equal(tls.tls_certificates[0].certificate_chain.filename, i.identity.certFile);
      const endpoints = cluster.load_assignment.endpoints[0].lb_endpoints.map(
        (e: Json) => e.endpoint.address.socket_address.port_value,
      );
      const replicas = mesh
        .instancesOf(service)
        .map((r) => (Number(port) === graph.ports.grpc ? r.inbound?.grpc : r.inbound?.http));
      assert.deepEqual(endpoints, replicas, `${where}: every replica's sidecar`);
    }
  }
});

/** Evaluates the generated RBAC filter (the subset the translator writes) for one request. */
function rbacAllows(rbac: Json, principal: string, method: string, path: string): boolean {
  const matchPermission = (p: Json): boolean => {
    if (p.any === true) return true;
    if (p.and_rules) return p.and_rules.rules.every(matchPermission);
    if (p.or_rules) return p.or_rules.rules.some(matchPermission);
    if (p.header) return p.header.name === ":method" && p.header.string_match.exact === method;
    if (p.url_path) return p.url_path.path.exact === path;
    throw new Error(`unexpected permission ${JSON.stringify(p)}`);
  };
  const matchPrincipal = (p: Json): boolean => {
    if (p.any === true) return true;
    const name = p.authenticated.principal_name;
    if (name.exact !== undefined) return name.exact === principal;
    return new RegExp(name.safe_regex.regex).test(principal);
  };
  return Object.values(rbac.rules.policies as Record<string, Json>).some(
    (policy) => policy.principals.some(matchPrincipal) && policy.permissions.some(matchPermission),
  );
}

test("RBAC: each inbound port allows exactly what the graph declares, and nothing else", () => {
  const allowed = allowedAccess(graph);
  const accounts = [...graph.services.keys(), EDGE, "storefront", "stranger"];
  const principals = [
    ...accounts.map((a) => `cluster.local/ns/${NS}/sa/${a}`),
    `cluster.local/ns/${INGRESS.namespace}/sa/${INGRESS.serviceAccount}`,
  ];
  const paths = [
    ...[...graph.services.values()].flatMap((s) =>
      [...s.methods.keys()].map((m) => methodPath(s.grpcService, m)),
    ),
    graph.jwks.path,
    "/grpc.health.v1.Health/Check",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/metrics",
    "/",
  ];
  let checked = 0;
  for (const svc of graph.services.values()) {
    const i = mesh.instancesOf(svc.name)[0];
    assert.ok(i);
    for (const port of PORTS) {
      const listener: Json = listeners(i).find((l) => l.name === `inbound|${port}`);
      const rbac: Json = hcmOf(listener).http_filters.find(
        (f: Json) => f.name === "envoy.filters.http.rbac",
      ).typed_config;
      assert.equal(rbac.rules.action, "ALLOW");
      for (const principal of principals) {
        for (const method of ["GET", "POST"]) {
          for (const path of paths) {
            const expected =
              allowed.get(svc.name)?.has(`${principal} ${port} ${method} ${path}`) === true;
            assert.equal(
              rbacAllows(rbac, `spiffe://${principal}`, method, path),
              expected,
              `${svc.name}:${port} ${principal} ${method} ${path}`,
            );
            checked += 1;
          }
        }
      }
    }
  }
  assert.ok(checked > 5_000, `${checked} requests checked`);
});

test("a policy field the translator does not know fails the generation instead of being dropped", () => {
  const withFault = virtualServices(graph).map((vs) => JSON.parse(JSON.stringify(vs)));
  const catalog = withFault.find((vs) => vs.metadata.name === "catalog");
  catalog.spec.http[0].fault = { abort: { httpStatus: 503, percentage: { value: 100 } } };
  const orders = mesh.instancesOf("orders")[0];
  assert.ok(orders);
  const plan = {
    workload: "orders",
    instance: "orders-0",
    adminPort: 1,
    tls: { certFile: "c", keyFile: "k", rootFile: "r" },
    inbound: [],
    outbound: [{ service: "catalog", podPort: graph.ports.grpc, listen: 2 }],
    endpoints: () => [3],
  };
  assert.throws(
    () => sidecarBootstrap({ ...committed, virtualServices: withFault }, plan),
    /fault is not translated/,
  );
});
