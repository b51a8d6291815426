import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { EVENT_SUBJECTS } from "@meshmart/kit";
import { parse, stringify } from "yaml";
import {
  CALLGRAPH_FILE,
  EDGE,
  loadCallGraph,
  publicMethods,
  REPO_ROOT,
  resolveCallGraph,
  STOREFRONT,
  serviceHost,
} from "../../scripts/deploy/callgraph.js";
import { scanCodeCalls } from "../../scripts/deploy/code-calls.js";
import { generate } from "../../scripts/deploy/generate.js";
import { subjectMatches } from "../../scripts/deploy/nats-auth.js";

// deploy/callgraph.yaml is a fact about the code: these tests hold the two together.

const graph = loadCallGraph();
const rawGraph = () => parse(readFileSync(CALLGRAPH_FILE, "utf8"));

/** Differences between what `service`'s code calls and what the graph declares for it. */
function codeVsGraph(service: string, src?: string): string[] {
  const svc = graph.services.get(service);
  assert.ok(svc, service);
  const code = scanCodeCalls(service, src);
  const out = [...code.problems];
  const byGrpc = new Map([...graph.services.values()].map((s) => [s.grpcService, s.name]));
  const constructed = new Set<string>();
  for (const client of code.clients) {
    const callee = byGrpc.get(client.grpcService) ?? client.grpcService;
    constructed.add(callee);
    if (!svc.calls.has(callee)) {
      out.push(
        `${client.at}: ${service} constructs a ${callee} client, but deploy/callgraph.yaml gives ${service} no calls to ${callee}`,
      );
    }
  }
  for (const [grpcService, methods] of code.methods) {
    const callee = byGrpc.get(grpcService) ?? grpcService;
    const declared = new Set(svc.calls.get(callee) ?? []);
    for (const m of methods) {
      if (!declared.has(m))
        out.push(`${service} calls ${callee}.${m}, which deploy/callgraph.yaml does not declare`);
    }
    for (const m of declared) {
      if (!methods.has(m))
        out.push(
          `${service} is allowed ${callee}.${m} but never calls it: remove it from deploy/callgraph.yaml`,
        );
    }
  }
  for (const callee of svc.calls.keys()) {
    if (!constructed.has(callee))
      out.push(`${service} declares calls to ${callee} but constructs no client for it`);
  }
  return out;
}

test("every service's outgoing gRPC calls in code are exactly its entry in the graph", () => {
  for (const service of graph.services.keys()) {
    assert.deepEqual(codeVsGraph(service), [], service);
  }
});

test("orders' calls are found in code (the scan is not vacuous)", () => {
  const code = scanCodeCalls("orders");
  assert.deepEqual(code.clients.map((c) => c.grpcService).sort(), [
    "meshmart.catalog.v1.CatalogService",
    "meshmart.inventory.v1.InventoryService",
    "meshmart.payments.v1.PaymentService",
  ]);
  assert.ok(code.methods.get("meshmart.payments.v1.PaymentService")?.has("RefundPayment"));
  assert.ok(code.methods.get("meshmart.catalog.v1.CatalogService")?.has("GetProduct"));
});

test("a client for a service not in the caller's graph entry fails the check", () => {
  const dir = mkdtempSync(join(tmpdir(), "callgraph-"));
  try {
    // notifications calls nobody; give it a catalog client and a call.
    writeFileSync(
      join(dir, "server.ts"),
      [
        'import { CatalogService } from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_service_pb.js";',
        "const deps = { catalog: createServiceClient(CatalogService, url, options) };",
        "await deps.catalog.listProducts({});",
      ].join("\n"),
    );
    const problems = codeVsGraph("notifications", dir);
    assert.ok(
      problems.some((p) => p.includes("constructs a catalog client")),
      problems.join("\n"),
    );
    assert.ok(
      problems.some((p) => p.includes("calls catalog.ListProducts")),
      problems.join("\n"),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a new call on an existing client, and a call the code dropped, both fail the check", () => {
  const dir = mkdtempSync(join(tmpdir(), "callgraph-"));
  try {
    writeFileSync(
      join(dir, "server.ts"),
      [
        "const catalog = createServiceClient(CatalogService, a, o);",
        "const inventory = createServiceClient(InventoryService, b, o);",
        "const payments = createServiceClient(PaymentService, c, o);",
        "await catalog.getProduct({}); await catalog.deleteProduct({});",
      ].join("\n"),
    );
    const problems = codeVsGraph("orders", dir);
    assert.ok(
      problems.some((p) => p.includes("orders calls catalog.DeleteProduct")),
      problems.join("\n"),
    );
    assert.ok(problems.some((p) => p.includes("never calls it") && p.includes("ReserveStock")));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the events each service publishes in code are the graph's", () => {
  for (const svc of graph.services.values()) {
    const server = readFileSync(join(REPO_ROOT, "services", svc.name, "src/server.ts"), "utf8");
    const publishes = [...server.matchAll(/publishes:\s*\[([^\]]*)\]/g)].flatMap((m) =>
      [...(m[1] ?? "").matchAll(/"([a-z]+)"/g)].map((d) => d[1]),
    );
    const declared = svc.publishes.map((s) => s.split(".")[0]);
    assert.deepEqual([...new Set(publishes)].sort(), [...new Set(declared)].sort(), svc.name);
    const consumes = [...server.matchAll(/domains:\s*\[([^\]]*)\]/g)].flatMap((m) =>
      [...(m[1] ?? "").matchAll(/"([a-z]+)"/g)].map((d) => d[1]),
    );
    const declaredConsumes = [...svc.consumes, ...svc.localOnlyConsumes].map(
      (s) => s.split(".")[0],
    );
    assert.deepEqual(
      [...new Set(consumes)].sort(),
      [...new Set(declaredConsumes)].sort(),
      svc.name,
    );
  }
});

test("each service's publishes patterns cover exactly its domain's event subjects (NATS matching)", () => {
  const subjects = Object.values(EVENT_SUBJECTS);
  for (const svc of graph.services.values()) {
    const own = subjects.filter((s) => s.split(".")[0] === svc.name);
    for (const subject of own) {
      assert.ok(
        svc.publishes.some((p) => subjectMatches(p, subject)),
        `${svc.name}: no publishes pattern matches ${subject}; NATS would refuse it`,
      );
    }
    for (const pattern of [...svc.publishes, ...svc.consumes, ...svc.localOnlyConsumes]) {
      assert.ok(
        subjects.some((s) => subjectMatches(pattern, s)),
        `${svc.name}: ${pattern} matches no event subject`,
      );
    }
  }
  assert.ok(subjectMatches("orders.order.*", "orders.order.placed"));
  assert.ok(!subjectMatches("inventory.*", "inventory.stock.changed"));
  assert.ok(subjectMatches("inventory.>", "inventory.stock.changed"));
  assert.ok(!subjectMatches("inventory.>", "inventory"));
});

test("the edge may call only transcoded methods, and Envoy transcodes exactly the edge's callees", () => {
  for (const [callee, methods] of graph.edge.calls) {
    const svc = graph.services.get(callee);
    assert.ok(svc);
    assert.deepEqual([...methods].sort(), publicMethods(svc.grpcService).sort());
  }
  const envoy = readFileSync(join(REPO_ROOT, "edge/envoy/envoy.yaml"), "utf8");
  const block = /grpc_json_transcoder[\s\S]*?services:\n((?:\s+- .+\n)+)/.exec(envoy)?.[1] ?? "";
  const transcoded = [...block.matchAll(/- (\S+)/g)].map((m) => m[1]).sort();
  const edgeServices = [...graph.edge.calls.keys()]
    .map((c) => graph.services.get(c)?.grpcService)
    .sort();
  assert.deepEqual(transcoded, edgeServices);

  const raw = rawGraph();
  raw.edge.calls.payments = ["GetPayment"];
  assert.throws(() => resolveCallGraph(raw), /edge may call only transcoded methods/);
});

test("Envoy's clusters are the graph's: each callee on the edge's ports, the storefront on its port", () => {
  type Cluster = {
    name: string;
    load_assignment?: {
      endpoints?: {
        lb_endpoints?: {
          endpoint: { address: { socket_address: { address: string; port_value: number } } };
        }[];
      }[];
    };
  };
  const envoy = parse(readFileSync(join(REPO_ROOT, "edge/envoy/envoy.yaml"), "utf8")) as {
    static_resources: { clusters: Cluster[] };
  };
  const targets = new Map(
    envoy.static_resources.clusters.flatMap((c) => {
      const addr = c.load_assignment?.endpoints?.[0]?.lb_endpoints?.[0]?.endpoint.address;
      return addr === undefined
        ? []
        : [[c.name, `${addr.socket_address.address}:${addr.socket_address.port_value}`] as const];
    }),
  );
  const expected = new Map<string, string>();
  for (const callee of graph.edge.calls.keys()) {
    for (const port of graph.edge.ports) {
      // edge/envoy/generate.ts names a service's Connect cluster `<name>_http`.
      const cluster = port === "grpc" ? callee : `${callee}_http`;
      expected.set(cluster, `${serviceHost(graph, callee)}:${graph.ports[port]}`);
    }
  }
  expected.set(STOREFRONT, `${serviceHost(graph, STOREFRONT)}:${graph.storefront.port}`);
  assert.deepEqual(
    new Map([...targets].sort(([a], [b]) => a.localeCompare(b))),
    new Map([...expected].sort(([a], [b]) => a.localeCompare(b))),
  );
});

test("the storefront's entry: known callers, reads only, a name no service takes; the edge's ports", () => {
  assert.deepEqual(graph.storefront.callers, [EDGE]);
  assert.deepEqual(graph.storefront.methods, ["GET", "HEAD"]);
  const unknown = rawGraph();
  unknown.storefront.callers.push("shipping");
  assert.throws(() => resolveCallGraph(unknown), /storefront caller shipping unknown/);
  const writes = rawGraph();
  writes.storefront.methods.push("POST");
  assert.throws(() => loadCallGraph(stringify(writes)));
  const clash = rawGraph();
  clash.services.storefront = clash.services.notifications;
  assert.throws(() => resolveCallGraph(clash), /storefront is a workload of its own/);
  const connectOnly = rawGraph();
  connectOnly.edge.ports = ["http"];
  assert.throws(() => loadCallGraph(stringify(connectOnly)), /edge.ports must include grpc/);
});

test("every RPC must be classified idempotent or not in the graph", () => {
  const raw = rawGraph();
  delete raw.services.identity.methods.RefreshToken;
  assert.throws(() => resolveCallGraph(raw), /RefreshToken is not declared/);
  const streaming = rawGraph();
  streaming.services.orders.methods.GetOrder.timeoutMs = 0;
  assert.throws(() => resolveCallGraph(streaming), /only streaming methods may have no timeout/);
  const unknown = rawGraph();
  unknown.services.orders.calls.catalog.push("GetPrice");
  assert.throws(() => resolveCallGraph(unknown), /catalog\.GetPrice: no such method/);
  assert.equal(graph.services.get("identity")?.methods.get("Login")?.idempotent, false);
  assert.ok(graph.edge.calls.has("orders") && !graph.services.has(EDGE));
});

test("the generated manifests are what the graph generates (regenerating changes nothing)", () => {
  assert.deepEqual(
    generate(true),
    [],
    "run: node --conditions=development --import tsx scripts/deploy/generate.ts",
  );
});
