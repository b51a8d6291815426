/**
 * Policy checks over rendered manifests (issue §6). Each returns the violations it found,
 * as readable lines; empty means the rule holds. tests/deploy runs them on every overlay
 * and on mutated copies (a dropped probe, retries on a non-idempotent method, a caller the
 * graph does not have), and `make deploy` refuses to apply when any is non-empty.
 */

import { LIVENESS_SERVICE } from "@meshmart/kit";
import {
  type CallGraph,
  calleesOf,
  callersOf,
  EDGE,
  edgePorts,
  fetchesStorefront,
  methodPath,
  principal,
  readOnlyMethods,
  STOREFRONT,
  serviceHost,
} from "./callgraph.js";
import {
  DATA_PORTS,
  GRPC_HEALTH_CHECK_PATH,
  INGRESS,
  ISTIO_AGENT_PORT,
  type K8sObject,
  MONITORING_NAMESPACE,
  RETRY_ON,
  TERMINATION_GRACE_S,
  workloads,
} from "./manifests.js";
import { describe } from "./render.js";

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const obj = (v: unknown): Obj => (isObj(v) ? v : {});
const get = (o: unknown, ...path: string[]): unknown =>
  path.reduce<unknown>((cur, key) => (isObj(cur) ? cur[key] : undefined), o);
const of = (objects: readonly K8sObject[], kind: string) => objects.filter((o) => o.kind === kind);

const WORKLOAD_KINDS = new Set(["Deployment", "StatefulSet", "DaemonSet"]);

/**
 * Every container of every workload: startup, readiness and liveness probes; CPU and
 * memory requests and limits; non-root; read-only root FS; no privilege escalation; ALL
 * capabilities dropped; RuntimeDefault seccomp. Mesh services also: gRPC health probes on
 * their gRPC port, their own ServiceAccount, preStop, and a termination grace that covers
 * the kit's drain.
 */
export function checkWorkloads(objects: readonly K8sObject[], graph: CallGraph): string[] {
  const out: string[] = [];
  for (const w of objects.filter((o) => WORKLOAD_KINDS.has(o.kind))) {
    const where = describe(w);
    const pod = obj(get(w, "spec", "template", "spec"));
    const podSec = obj(pod.securityContext);
    const containers = arr(pod.containers).map(obj);
    if (containers.length === 0) out.push(`${where}: no containers`);
    for (const c of containers) {
      const at = `${where} container ${String(c.name)}`;
      for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
        if (!isObj(c[probe])) out.push(`${at}: no ${probe}`);
      }
      for (const kind of ["requests", "limits"]) {
        for (const res of ["cpu", "memory"]) {
          if (get(c, "resources", kind, res) === undefined) out.push(`${at}: no ${kind}.${res}`);
        }
      }
      const sec = obj(c.securityContext);
      if ((sec.runAsNonRoot ?? podSec.runAsNonRoot) !== true) out.push(`${at}: not runAsNonRoot`);
      const uid = sec.runAsUser ?? podSec.runAsUser;
      if (uid === 0) out.push(`${at}: runs as uid 0`);
      if (sec.readOnlyRootFilesystem !== true) out.push(`${at}: root filesystem is writable`);
      if (sec.allowPrivilegeEscalation !== false) out.push(`${at}: allows privilege escalation`);
      if (!arr(get(sec, "capabilities", "drop")).includes("ALL")) {
        out.push(`${at}: does not drop ALL capabilities`);
      }
      const seccomp = get(sec, "seccompProfile", "type") ?? get(podSec, "seccompProfile", "type");
      if (seccomp !== "RuntimeDefault") out.push(`${at}: seccompProfile is not RuntimeDefault`);
    }
    const name = w.metadata.name;
    if (w.metadata.namespace !== graph.namespace || w.kind !== "Deployment") continue;
    if (pod.serviceAccountName !== name) out.push(`${where}: serviceAccountName is not ${name}`);
    const grace = Number(pod.terminationGracePeriodSeconds ?? 30);
    if (grace < TERMINATION_GRACE_S) {
      out.push(
        `${where}: terminationGracePeriodSeconds ${grace} < ${TERMINATION_GRACE_S} (preStop + drain)`,
      );
    }
    for (const c of containers) {
      if (!isObj(get(c, "lifecycle", "preStop"))) out.push(`${where}: no preStop`);
      if (!graph.services.has(name)) continue;
      for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
        const port = get(c, probe, "grpc", "port");
        if (isObj(c[probe]) && port !== graph.ports.grpc) {
          out.push(`${where}: ${probe} is not grpc.health.v1 on port ${graph.ports.grpc}`);
        }
      }
      // Readiness follows the dependencies; liveness must not, or an outage restarts pods.
      if (get(c, "livenessProbe", "grpc", "service") !== LIVENESS_SERVICE) {
        out.push(`${where}: livenessProbe must ask the "${LIVENESS_SERVICE}" health name`);
      }
    }
  }
  return out;
}

const ISTIO_PROTOCOL = /^(grpc|grpc-web|http|http2|https|tcp|tls|mongo|mysql|redis|udp)(-.*)?$/;

/** Every Service port is named, and in a meshed namespace named (or appProtocol'd) for Istio. */
export function checkServicePorts(objects: readonly K8sObject[]): string[] {
  const out: string[] = [];
  for (const svc of of(objects, "Service")) {
    for (const p of arr(get(svc, "spec", "ports")).map(obj)) {
      if (typeof p.name !== "string" || p.name === "") {
        out.push(`${describe(svc)}: port ${String(p.port)} has no name`);
      } else if (!ISTIO_PROTOCOL.test(p.name) && typeof p.appProtocol !== "string") {
        out.push(`${describe(svc)}: port ${p.name} names no protocol Istio knows`);
      }
    }
  }
  return out;
}

/** No Secret carries a value, and no container sets a secret-looking variable literally. */
export function checkNoSecretValues(objects: readonly K8sObject[]): string[] {
  const out: string[] = [];
  for (const s of of(objects, "Secret")) {
    if (s.data !== undefined || s.stringData !== undefined) out.push(`${describe(s)}: has values`);
  }
  const secretName = /(KEY|PASSWORD|SECRET|TOKEN|CREDENTIAL)/i;
  for (const w of objects.filter((o) => WORKLOAD_KINDS.has(o.kind))) {
    for (const c of arr(get(w, "spec", "template", "spec", "containers")).map(obj)) {
      for (const e of arr(c.env).map(obj)) {
        const name = String(e.name);
        if (typeof e.value !== "string") continue;
        // Allowed: a value made only of references to other variables (and quotes around them).
        const literal = e.value.replace(/\$\([A-Z_][A-Z0-9_]*\)/g, "").replace(/"/g, "");
        if (secretName.test(name) && literal !== "") {
          out.push(`${describe(w)}: ${name} is set literally`);
        }
        // A URL may carry a password only as a reference to another variable.
        const userinfo = /^[a-z]+:\/\/[^:@/]+:([^@]*)@/.exec(e.value);
        if (userinfo && !/^\$\([A-Z_]+\)$/.test(userinfo[1] ?? "")) {
          out.push(`${describe(w)}: ${name} has a literal password`);
        }
      }
    }
  }
  for (const cm of of(objects, "ConfigMap")) {
    for (const key of Object.keys(obj(cm.data))) {
      if (secretName.test(key) && !key.endsWith("_URL") && !key.endsWith("ACCOUNTS")) {
        out.push(`${describe(cm)}: key ${key} looks secret`);
      }
    }
  }
  return out;
}

/**
 * Every workload of the mesh has a DestinationRule (ISTIO_MUTUAL, outlierDetection,
 * connectionPool), a VirtualService, an AuthorizationPolicy and a Sidecar; STRICT mTLS
 * holds mesh-wide and in the namespace; the namespace denies by default.
 */
export function checkMeshCoverage(objects: readonly K8sObject[], graph: CallGraph): string[] {
  const out: string[] = [];
  const ns = graph.namespace;
  const inNs = (kind: string) => of(objects, kind).filter((o) => o.metadata.namespace === ns);
  for (const name of workloads(graph)) {
    const host = serviceHost(graph, name);
    const dr = inNs("DestinationRule").find((d) => get(d, "spec", "host") === host);
    if (dr === undefined) out.push(`${name}: no DestinationRule`);
    else {
      const tp = obj(get(dr, "spec", "trafficPolicy"));
      if (get(tp, "tls", "mode") !== "ISTIO_MUTUAL")
        out.push(`${name}: DestinationRule not ISTIO_MUTUAL`);
      const od = obj(tp.outlierDetection);
      for (const f of [
        "consecutive5xxErrors",
        "consecutiveGatewayErrors",
        "interval",
        "baseEjectionTime",
        "maxEjectionPercent",
      ]) {
        if (od[f] === undefined) out.push(`${name}: outlierDetection has no ${f}`);
      }
      if (!isObj(tp.connectionPool)) out.push(`${name}: DestinationRule has no connectionPool`);
    }
    if (!inNs("VirtualService").some((v) => arr(get(v, "spec", "hosts")).includes(host))) {
      out.push(`${name}: no VirtualService`);
    }
    const selects = (o: K8sObject) =>
      get(o, "spec", "selector", "matchLabels", "app.kubernetes.io/name") === name ||
      get(o, "spec", "workloadSelector", "labels", "app.kubernetes.io/name") === name;
    if (!inNs("AuthorizationPolicy").some(selects)) out.push(`${name}: no AuthorizationPolicy`);
    if (!inNs("Sidecar").some(selects)) out.push(`${name}: no Sidecar`);
  }
  const denyAll = inNs("AuthorizationPolicy").some((p) => Object.keys(obj(p.spec)).length === 0);
  if (!denyAll) out.push(`${ns}: no deny-by-default AuthorizationPolicy (empty spec)`);
  for (const where of ["istio-system", ns]) {
    const pa = of(objects, "PeerAuthentication").find(
      (p) => p.metadata.namespace === where && get(p, "spec", "selector") === undefined,
    );
    if (get(pa, "spec", "mtls", "mode") !== "STRICT")
      out.push(`${where}: PeerAuthentication is not STRICT`);
  }
  return out;
}

const ALLOWED_RETRY_ON = new Set(RETRY_ON.split(","));

/**
 * Routes of the services' VirtualServices: each method of the graph has its own route with
 * a timeout on the gRPC port, and so does each method the edge calls on the Connect port;
 * a method that is not idempotent, and every route that is not one method, says
 * retries.attempts 0 (Istio retries by default); retries elsewhere are bounded, have a
 * perTryTimeout and retry only on unavailable/reset/connect-failure.
 */
export function checkRetries(objects: readonly K8sObject[], graph: CallGraph): string[] {
  const out: string[] = [];
  for (const svc of graph.services.values()) {
    const host = serviceHost(graph, svc.name);
    const vs = of(objects, "VirtualService").find((v) =>
      arr(get(v, "spec", "hosts")).includes(host),
    );
    if (vs === undefined) continue; // checkMeshCoverage reports it
    const routed = new Set<string>();
    for (const route of arr(get(vs, "spec", "http")).map(obj)) {
      const label = `${svc.name} route ${String(route.name ?? "?")}`;
      const paths = arr(route.match)
        .map((m) => get(m, "uri", "exact"))
        .filter((p) => typeof p === "string");
      const methods = paths.flatMap((p) => {
        const m = [...svc.methods.keys()].find((name) => methodPath(svc.grpcService, name) === p);
        return m === undefined ? [] : [m];
      });
      // A match without a port matches both.
      const matchPorts = arr(route.match).map((m) => get(m, "port") ?? "any");
      for (const m of methods) for (const port of matchPorts) routed.add(`${port} ${m}`);
      const specs = methods.map((m) => svc.methods.get(m));
      const idempotent = specs.length > 0 && specs.every((s) => s?.idempotent === true);
      const streaming = specs.some((s) => s?.streaming === true);
      const jwks = svc.name === graph.jwks.service && paths.includes(graph.jwks.path);
      if (typeof route.timeout !== "string") out.push(`${label}: no timeout`);
      else if (route.timeout === "0s" && !streaming) out.push(`${label}: timeout disabled`);
      const retries = route.retries;
      const attempts = get(retries, "attempts");
      if (!idempotent && !jwks) {
        if (attempts !== 0) {
          const what =
            methods.length > 0 ? `non-idempotent ${methods.join(",")}` : "a catch-all route";
          out.push(
            `${label}: ${what} must have retries.attempts 0 (Istio retries by default), has ${JSON.stringify(retries ?? "default")}`,
          );
        }
        continue;
      }
      if (typeof attempts !== "number" || attempts < 0 || attempts > 3) {
        out.push(`${label}: retries.attempts must be 0..3`);
      }
      if (typeof attempts === "number" && attempts > 0) {
        const on = String(get(retries, "retryOn") ?? "").split(",");
        for (const cond of on) {
          if (!ALLOWED_RETRY_ON.has(cond)) out.push(`${label}: retries on "${cond}"`);
        }
        if (!streaming && typeof get(retries, "perTryTimeout") !== "string") {
          out.push(`${label}: retries without perTryTimeout`);
        }
      }
    }
    const routedOn = (port: number, m: string) =>
      routed.has(`${port} ${m}`) || routed.has(`any ${m}`);
    for (const m of svc.methods.keys()) {
      if (!routedOn(graph.ports.grpc, m))
        out.push(`${svc.name}: method ${m} has no route (timeout, retries)`);
    }
    // The edge's Connect calls: without their own route they would get the catch-all's.
    if (graph.edge.ports.includes("http")) {
      for (const m of graph.edge.calls.get(svc.name) ?? []) {
        if (!routedOn(graph.ports.http, m))
          out.push(
            `${svc.name}: method ${m} has no route on the Connect port ${graph.ports.http} (timeout, retries)`,
          );
      }
    }
  }
  return out;
}

/**
 * What the graph allows, per workload, as `source port method path` (source a principal or
 * `ns:<namespace>`; method or path "*" = any).
 */
export function allowedAccess(graph: CallGraph): Map<string, Set<string>> {
  const allowed = new Map<string, Set<string>>();
  const add = (workload: string, p: string, port: number, method: string, path: string) => {
    const set = allowed.get(workload) ?? new Set<string>();
    set.add(`${p} ${port} ${method} ${path}`);
    allowed.set(workload, set);
  };
  const ns = graph.namespace;
  const { grpc, http, admin } = graph.ports;
  for (const svc of graph.services.values()) {
    for (const [caller, methods] of callersOf(graph, svc.name)) {
      const p = principal(ns, caller);
      for (const m of methods) add(svc.name, p, grpc, "POST", methodPath(svc.grpcService, m));
      // The edge's Envoy health-checks each upstream it routes to.
      if (caller === EDGE) add(svc.name, p, grpc, "POST", GRPC_HEALTH_CHECK_PATH);
      if (caller !== EDGE || !graph.edge.ports.includes("http")) continue;
      // Connect: POST, and GET for the read-only methods (which a Connect server takes).
      for (const m of methods) add(svc.name, p, http, "POST", methodPath(svc.grpcService, m));
      for (const m of readOnlyMethods(svc.grpcService).filter((r) => methods.includes(r)))
        add(svc.name, p, http, "GET", methodPath(svc.grpcService, m));
    }
    add(svc.name, `ns:${MONITORING_NAMESPACE}`, admin, "GET", "/metrics");
  }
  const jwksCallers = [
    ...graph.jwks.callers.map((c) => principal(ns, c)),
    principal(INGRESS.namespace, INGRESS.serviceAccount),
  ];
  for (const p of jwksCallers) add(graph.jwks.service, p, http, "GET", graph.jwks.path);
  add(EDGE, principal(INGRESS.namespace, INGRESS.serviceAccount), graph.edge.port, "*", "*");
  for (const caller of graph.storefront.callers) {
    for (const method of graph.storefront.methods)
      add(STOREFRONT, principal(ns, caller), graph.storefront.port, method, "*");
  }
  return allowed;
}

/**
 * The AuthorizationPolicies allow exactly the graph: every (source, port, path) an ALLOW
 * rule grants is in the graph, every grant names its sources (no allow-from-anyone), and
 * every call the graph declares is granted. DENY policies only narrow and are not checked.
 */
export function checkAuthorization(objects: readonly K8sObject[], graph: CallGraph): string[] {
  const out: string[] = [];
  const allowed = allowedAccess(graph);
  const granted = new Map<string, Set<string>>();
  for (const p of of(objects, "AuthorizationPolicy")) {
    if (p.metadata.namespace !== graph.namespace) continue;
    const spec = obj(p.spec);
    const action = spec.action ?? "ALLOW";
    if (action !== "ALLOW" || Object.keys(spec).length === 0) continue;
    const target = get(spec, "selector", "matchLabels", "app.kubernetes.io/name");
    if (typeof target !== "string") {
      out.push(`${describe(p)}: an ALLOW policy must select one workload`);
      continue;
    }
    const mine = granted.get(target) ?? new Set<string>();
    granted.set(target, mine);
    for (const rule of arr(spec.rules).map(obj)) {
      const sources = arr(rule.from).map((f) => obj(get(f, "source")));
      const who = sources.flatMap((s) => [
        ...arr(s.principals).map(String),
        ...arr(s.namespaces).map((n) => `ns:${String(n)}`),
      ]);
      if (
        who.length === 0 ||
        sources.some((s) => Object.keys(s).some((k) => k !== "principals" && k !== "namespaces"))
      ) {
        out.push(`${describe(p)}: a rule must name its sources by principal or namespace only`);
        continue;
      }
      const ops = arr(rule.to).map((t) => obj(get(t, "operation")));
      if (ops.length === 0) {
        out.push(`${describe(p)}: a rule without operations allows every method`);
        continue;
      }
      for (const op of ops) {
        const ports = arr(op.ports).map(String);
        const methods = op.methods === undefined ? ["*"] : arr(op.methods).map(String);
        const paths = op.paths === undefined ? ["*"] : arr(op.paths).map(String);
        if (ports.length === 0) out.push(`${describe(p)}: an operation must name its ports`);
        if (Object.keys(op).some((k) => !["ports", "methods", "paths"].includes(k))) {
          out.push(`${describe(p)}: an operation may say only ports, methods and paths`);
        }
        for (const src of who) {
          for (const port of ports) {
            for (const method of methods) {
              for (const path of paths) {
                const key = `${src} ${port} ${method} ${path}`;
                mine.add(key);
                if (!allowed.get(target)?.has(key)) {
                  out.push(
                    `${describe(p)}: allows ${src} to ${method === "*" ? "any method" : method} ${target}:${port}${path === "*" ? " (any path)" : path}, which deploy/callgraph.yaml does not declare`,
                  );
                }
              }
            }
          }
        }
      }
    }
  }
  for (const [target, keys] of allowed) {
    for (const key of keys) {
      if (!granted.get(target)?.has(key))
        out.push(`${target}: the graph's ${key} is not allowed by any policy`);
    }
  }
  return out;
}

/**
 * What the graph lets through at L3/L4, per workload of the mesh: `in <peer> <port>` and
 * `out <peer> <port>`, a peer being a workload of the namespace, `ns:<namespace>`, or
 * `<namespace>/<name>` (a data store). DNS and istiod are the namespace-wide policy's.
 */
export function allowedTraffic(graph: CallGraph): Map<string, Set<string>> {
  const { ports, dataNamespace: dataNs } = graph;
  const allowed = new Map<string, Set<string>>();
  const add = (workload: string, dir: "in" | "out", peer: string, port: number) => {
    const set = allowed.get(workload) ?? new Set<string>();
    set.add(`${dir} ${peer} ${port}`);
    allowed.set(workload, set);
  };
  for (const name of workloads(graph)) {
    for (const callee of calleesOf(graph, name)) {
      for (const port of name === EDGE ? edgePorts(graph) : [ports.grpc]) {
        add(name, "out", callee, port);
        add(callee, "in", name, port);
      }
    }
    if (fetchesStorefront(graph, name)) {
      add(name, "out", STOREFRONT, graph.storefront.port);
      add(STOREFRONT, "in", name, graph.storefront.port);
    }
    if (graph.jwks.callers.includes(name) && name !== graph.jwks.service) {
      add(name, "out", graph.jwks.service, ports.http);
      add(graph.jwks.service, "in", name, ports.http);
    }
    for (const store of graph.services.get(name)?.uses ?? []) {
      add(name, "out", `${dataNs}/${store}`, DATA_PORTS[store]);
    }
    if (graph.services.has(name)) add(name, "in", `ns:${MONITORING_NAMESPACE}`, ports.admin);
    add(name, "in", `ns:${MONITORING_NAMESPACE}`, ISTIO_AGENT_PORT);
  }
  add(graph.jwks.service, "in", `ns:${INGRESS.namespace}`, ports.http);
  add(EDGE, "in", `ns:${INGRESS.namespace}`, graph.edge.port);
  return allowed;
}

/** A NetworkPolicy peer as allowedTraffic names it, or undefined when it is anything else. */
function peerName(peer: Obj, namespace: string): string | undefined {
  const keys = Object.keys(peer).sort().join(",");
  const pod = obj(get(peer, "podSelector", "matchLabels"));
  const ns = obj(get(peer, "namespaceSelector", "matchLabels"));
  const podName = pod["app.kubernetes.io/name"];
  const nsName = ns["kubernetes.io/metadata.name"];
  const onlyName = (o: Obj, key: string) =>
    Object.keys(o).length === 1 && typeof o[key] === "string";
  const hasExpressions =
    get(peer, "podSelector", "matchExpressions") !== undefined ||
    get(peer, "namespaceSelector", "matchExpressions") !== undefined;
  if (hasExpressions) return undefined;
  if (keys === "podSelector" && onlyName(pod, "app.kubernetes.io/name")) {
    return String(podName);
  }
  if (keys === "namespaceSelector" && onlyName(ns, "kubernetes.io/metadata.name")) {
    return `ns:${String(nsName)}`;
  }
  if (
    keys === "namespaceSelector,podSelector" &&
    onlyName(pod, "app.kubernetes.io/name") &&
    onlyName(ns, "kubernetes.io/metadata.name")
  ) {
    return nsName === namespace ? String(podName) : `${String(nsName)}/${String(podName)}`;
  }
  return undefined;
}

/**
 * The NetworkPolicies: default deny in both namespaces; per workload of the mesh, ingress
 * and egress exactly the graph's (every rule names its peers and ports; every pair it
 * opens is declared, every declared pair is open).
 */
export function checkNetworkPolicies(objects: readonly K8sObject[], graph: CallGraph): string[] {
  const out: string[] = [];
  const pols = of(objects, "NetworkPolicy");
  for (const ns of [graph.namespace, graph.dataNamespace]) {
    const denies = pols.some(
      (p) =>
        p.metadata.namespace === ns &&
        Object.keys(obj(get(p, "spec", "podSelector"))).length === 0 &&
        arr(get(p, "spec", "policyTypes")).includes("Ingress") &&
        arr(get(p, "spec", "policyTypes")).includes("Egress") &&
        get(p, "spec", "ingress") === undefined &&
        get(p, "spec", "egress") === undefined,
    );
    if (!denies) out.push(`${ns}: no default-deny NetworkPolicy`);
  }
  const allowed = allowedTraffic(graph);
  const opened = new Map<string, Set<string>>();
  for (const pol of pols) {
    if (pol.metadata.namespace !== graph.namespace) continue;
    const target = get(pol, "spec", "podSelector", "matchLabels", "app.kubernetes.io/name");
    if (typeof target !== "string") continue; // namespace-wide: default deny, DNS, istiod
    const mine = opened.get(target) ?? new Set<string>();
    opened.set(target, mine);
    for (const [dir, field, peersField] of [
      ["in", "ingress", "from"],
      ["out", "egress", "to"],
    ] as const) {
      for (const rule of arr(get(pol, "spec", field)).map(obj)) {
        const peers = arr(rule[peersField]).map(obj);
        const rulePorts = arr(rule.ports).map((p) => get(p, "port"));
        if (peers.length === 0 || rulePorts.length === 0) {
          out.push(
            `${describe(pol)}: an ${field} rule must name its peers and ports (it opens ${peers.length === 0 ? "every peer" : "every port"})`,
          );
          continue;
        }
        for (const peer of peers) {
          const who = peerName(peer, graph.namespace);
          if (who === undefined) {
            out.push(
              `${describe(pol)}: ${field} peer ${JSON.stringify(peer)} is not a workload of the graph`,
            );
            continue;
          }
          for (const port of rulePorts) {
            const key = `${dir} ${who} ${String(port)}`;
            mine.add(key);
            if (!allowed.get(target)?.has(key)) {
              out.push(
                dir === "in"
                  ? `${describe(pol)}: admits ${who} on port ${String(port)}, which deploy/callgraph.yaml does not declare`
                  : `${describe(pol)}: lets it reach ${who} on port ${String(port)}, which deploy/callgraph.yaml does not declare`,
              );
            }
          }
        }
      }
    }
  }
  for (const name of workloads(graph)) {
    const mine = opened.get(name);
    if (mine === undefined) {
      out.push(`${name}: no NetworkPolicy`);
      continue;
    }
    for (const key of allowed.get(name) ?? []) {
      if (mine.has(key)) continue;
      const [dir, who, port] = key.split(" ");
      out.push(
        dir === "in"
          ? `NetworkPolicy ${graph.namespace}/${name}: does not admit ${who} on port ${port}`
          : `NetworkPolicy ${graph.namespace}/${name}: does not let it reach ${who} on port ${port}`,
      );
    }
  }
  return out;
}

/**
 * Each workload's Sidecar reaches only its callees, the JWKS, the storefront if it fetches
 * it, its data stores, istio-system.
 */
export function checkSidecars(objects: readonly K8sObject[], graph: CallGraph): string[] {
  const out: string[] = [];
  for (const name of workloads(graph)) {
    const sc = of(objects, "Sidecar").find(
      (s) => get(s, "spec", "workloadSelector", "labels", "app.kubernetes.io/name") === name,
    );
    if (sc === undefined) continue; // checkMeshCoverage reports it
    const allowed = new Set(calleesOf(graph, name).map((c) => `./${serviceHost(graph, c)}`));
    if (fetchesStorefront(graph, name)) allowed.add(`./${serviceHost(graph, STOREFRONT)}`);
    if (graph.jwks.callers.includes(name))
      allowed.add(`./${serviceHost(graph, graph.jwks.service)}`);
    for (const store of graph.services.get(name)?.uses ?? []) {
      allowed.add(`${graph.dataNamespace}/${store}.${graph.dataNamespace}.svc.cluster.local`);
    }
    allowed.add("istio-system/*");
    for (const e of arr(get(sc, "spec", "egress"))) {
      for (const h of arr(get(e, "hosts")).map(String)) {
        if (!allowed.has(h)) out.push(`${describe(sc)}: egress to ${h} is not in the graph`);
      }
    }
    if (get(sc, "spec", "outboundTrafficPolicy", "mode") !== "REGISTRY_ONLY") {
      out.push(`${describe(sc)}: outboundTrafficPolicy is not REGISTRY_ONLY`);
    }
  }
  return out;
}

/** Every check over one rendered deployment (an overlay plus istio/). */
export function checkAll(objects: readonly K8sObject[], graph: CallGraph): string[] {
  return [
    ...checkWorkloads(objects, graph),
    ...checkServicePorts(objects),
    ...checkNoSecretValues(objects),
    ...checkMeshCoverage(objects, graph),
    ...checkRetries(objects, graph),
    ...checkAuthorization(objects, graph),
    ...checkNetworkPolicies(objects, graph),
    ...checkSidecars(objects, graph),
  ];
}

/** Images the objects run, sorted. */
export function imagesOf(objects: readonly K8sObject[]): string[] {
  const images = new Set<string>();
  for (const w of objects.filter((o) => WORKLOAD_KINDS.has(o.kind))) {
    for (const c of arr(get(w, "spec", "template", "spec", "containers"))) {
      const image = get(c, "image");
      if (typeof image === "string") images.add(image);
    }
  }
  return [...images].sort();
}
