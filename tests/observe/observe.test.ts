/**
 * `make up OBSERVE=1`'s promise, against real Jaeger and Prometheus: one order placed
 * through the edge is one trace — the edge, orders, catalog, inventory, payments, the
 * outbox relay's publish and notifications' consume, every span connected — and Prometheus,
 * scraping every service and the edge with the project's alert rules, has the RED series,
 * no alert in steady state, and MeshmartServiceDown pending once payments dies. Then a real
 * browser shows the trace in Jaeger's UI and one RED query in Prometheus' graph, saved to
 * test-results/observe/.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { InventoryService } from "@meshmart/kit/gen/meshmart/inventory/v1/inventory_service_pb.js";
import { freePort, waitFor } from "@meshmart/kit/testing";
import { chromium } from "playwright-core";
import { loadCallGraph } from "../../scripts/deploy/callgraph.js";
import { toolPath } from "../../scripts/lib/tools.js";
import { type RunningJaeger, startJaeger } from "../../scripts/observe/jaeger.js";
import {
  PROMETHEUS_BIN,
  type RunningPrometheus,
  startPrometheus,
} from "../../scripts/observe/prometheus.js";
import {
  EDGE_JOB,
  prometheusYaml,
  RULES_FILE,
  rulesWithFor,
} from "../../scripts/observe/prometheus-config.js";
import { type Mesh, startMesh } from "../support/mesh.js";
import { createRestCall, type Json } from "../support/rest.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const RESULTS = join(ROOT, "test-results", "observe");
const CHROMIUM = "/usr/bin/chromium";

/** Why the suite cannot run here, or false. In CI every tool is installed, so nothing skips. */
function missingTool(): string | false {
  try {
    toolPath("jaeger");
  } catch (reason) {
    return reason instanceof Error ? reason.message : String(reason);
  }
  if (!existsSync(PROMETHEUS_BIN)) {
    return `no prometheus at ${PROMETHEUS_BIN}: apt-get install prometheus`;
  }
  return false;
}
const skip = missingTool();

/** A span as Jaeger's /api/traces answers it (the fields read here). */
interface JaegerSpan {
  traceID: string;
  spanID: string;
  operationName: string;
  processID: string;
  references: { refType: "CHILD_OF" | "FOLLOWS_FROM"; traceID: string; spanID: string }[];
  tags: { key: string; value: string | number | boolean }[];
}
interface JaegerTrace {
  traceID: string;
  spans: JaegerSpan[];
  processes: Record<string, { serviceName: string }>;
}

const tag = (span: JaegerSpan, key: string) => span.tags.find((t) => t.key === key)?.value;
const card = { number: "4242424242424242", expMonth: 12, expYear: 2030, cvc: "123" };

describe("make up OBSERVE=1: one trace per order, RED metrics and alerts", {
  skip,
  timeout: 150_000,
}, () => {
  let dir: string;
  let jaeger: RunningJaeger;
  let prometheus: RunningPrometheus;
  let mesh: Mesh;
  const rest = createRestCall(() => mesh.edgeUrl);
  let placed: { orderId: string; traceId: string; token: string };
  let trace: JaegerTrace;

  /** PlaceOrder through the edge's REST API; the raw answer, for its headers. */
  async function placeOrder(token: string): Promise<Response> {
    const { products } = await rest("GET", "/v1/products?page_size=1");
    const product = products[0] as Json;
    const res = await fetch(`${mesh.edgeUrl}/v1/orders`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({
        requestId: randomUUID(),
        items: [{ productId: product.id, quantity: 1 }],
        payment: { card },
      }),
    });
    assert.equal(res.status, 200, await res.clone().text());
    return res;
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "meshmart-observe-"));
    jaeger = await startJaeger({
      bin: toolPath("jaeger"),
      dir: join(dir, "jaeger"),
      ports: {
        query: await freePort(),
        queryGrpc: await freePort(),
        otlpGrpc: await freePort(),
        otlpHttp: await freePort(),
      },
    });
    mesh = await startMesh({
      label: "observe",
      edge: true,
      otlp: { httpUrl: jaeger.otlpHttpUrl, grpcPort: jaeger.ports.otlpGrpc },
    });
    // The shipped rules with every `for:` at 30s: long enough that an alert stays pending
    // while the test looks, short enough to mean "pending" and not "maybe in minutes".
    const rules = join(dir, "rules.yaml");
    writeFileSync(rules, rulesWithFor(readFileSync(RULES_FILE, "utf8"), "30s"));
    const edgeAdmin = Number(new URL(mesh.edge?.adminUrl ?? "http://x:0").port);
    prometheus = await startPrometheus({
      bin: PROMETHEUS_BIN,
      dir: join(dir, "prometheus"),
      port: await freePort(),
      config: prometheusYaml({
        graph: loadCallGraph(),
        adminPort: (name) => mesh.ports(name).admin,
        edgeAdminPort: edgeAdmin,
        ruleFiles: [rules],
        scrapeInterval: "1s",
        evaluationInterval: "1s",
      }),
    });
  });

  after(async () => {
    await mesh?.stop();
    await Promise.all([prometheus?.stop(), jaeger?.stop()]);
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  test("an order through the edge is one trace: edge → orders → catalog, inventory, payments → events", async () => {
    const email = `observe-${randomUUID()}@example.com`;
    const password = "correct horse battery staple";
    await rest("POST", "/v1/users", { email, password, displayName: "Observer" });
    const { accessToken: token } = await rest("POST", "/v1/sessions", { email, password });
    // Inventory learns the demo products from catalog's events, a moment after start.
    const { products } = await rest("GET", "/v1/products?page_size=1");
    const stock = createClient(
      InventoryService,
      createGrpcTransport({ baseUrl: `http://127.0.0.1:${mesh.ports("inventory").grpc}` }),
    );
    await waitFor("demo stock", async () => {
      const answer = await stock.getStock({ key: { case: "productId", value: products[0].id } });
      return (answer.stock?.available ?? 0n) > 0n;
    });
    const res = await placeOrder(token);
    const traceId = res.headers.get("x-trace-id");
    assert.match(traceId ?? "", /^[0-9a-f]{32}$/, "the edge answers with the trace id");
    const { order } = (await res.json()) as Json;
    placed = { orderId: order.id, traceId: traceId as string, token };
    await waitFor("the order to be confirmed and notified", async () => {
      const { order: now } = await rest("GET", `/v1/orders/${order.id}`, undefined, token);
      if (now.status !== "ORDER_STATUS_CONFIRMED") return undefined;
      const { notifications } = await rest("GET", "/v1/notifications", undefined, token);
      return (notifications as Json[]).some((n) => JSON.stringify(n).includes(order.id))
        ? true
        : undefined;
    });

    // Spans arrive in batches from seven processes, each exporting on its own schedule:
    // wait until every span asserted below is there (a service's first span is not its last:
    // inventory's ReserveStock can arrive a batch before its CommitReservation).
    const wanted = ["edge", "orders", "catalog", "inventory", "payments", "notifications"];
    const servedSpans = [
      ["orders", "PlaceOrder"],
      ["catalog", "GetProduct"],
      ["inventory", "ReserveStock"],
      ["inventory", "CommitReservation"],
      ["payments", "AuthorizePayment"],
      ["payments", "CapturePayment"],
    ];
    trace = await waitFor(
      "the whole trace in Jaeger",
      async () => {
        const answer = await fetch(`${jaeger.url}/api/traces/${traceId}`);
        if (!answer.ok) return undefined;
        const [found] = ((await answer.json()) as { data: JaegerTrace[] }).data;
        if (found === undefined) return undefined;
        const services = new Set(Object.values(found.processes).map((p) => p.serviceName));
        const of = (s: JaegerSpan) => found.processes[s.processID]?.serviceName;
        const consumed = found.spans.some(
          (s) => tag(s, "messaging.operation.type") === "process" && of(s) === "notifications",
        );
        const published = found.spans.some(
          (s) => tag(s, "messaging.operation.type") === "publish" && of(s) === "orders",
        );
        const served = servedSpans.every(([service, method]) =>
          found.spans.some(
            (s) =>
              of(s) === service &&
              tag(s, "span.kind") === "server" &&
              tag(s, "rpc.method") === method,
          ),
        );
        return wanted.every((w) => services.has(w)) && consumed && published && served
          ? found
          : undefined;
      },
      20_000,
    );
    const serviceOf = (s: JaegerSpan) => trace.processes[s.processID]?.serviceName ?? "";
    const spans = trace.spans;

    for (const s of spans) {
      assert.ok(serviceOf(s) !== "", `span ${s.operationName} has a service name`);
      assert.ok(!serviceOf(s).startsWith("unknown_service"), `${s.operationName}: ${serviceOf(s)}`);
    }

    // Connected: one root (the edge's), every other span's parent or link is in the trace.
    const ids = new Set(spans.map((s) => s.spanID));
    const roots = spans.filter((s) => !s.references.some((r) => ids.has(r.spanID)));
    assert.deepEqual(
      roots.map((s) => `${serviceOf(s)} ${s.operationName}`),
      [`edge ${roots[0]?.operationName}`],
      "exactly one root span, the edge's",
    );

    // RPC semantic conventions on every gRPC span, server and client.
    const rpc = spans.filter((s) => tag(s, "rpc.system") !== undefined);
    for (const s of rpc) {
      assert.equal(tag(s, "rpc.system"), "grpc", s.operationName);
      assert.match(String(tag(s, "rpc.service")), /^meshmart\.[a-z]+\.v1\.[A-Za-z]+Service$/);
      assert.ok(tag(s, "rpc.method"), `${s.operationName} has rpc.method`);
      assert.equal(typeof tag(s, "rpc.grpc.status_code"), "number", `${s.operationName} status`);
    }
    const served = (service: string, method: string) =>
      rpc.some(
        (s) =>
          serviceOf(s) === service &&
          tag(s, "span.kind") === "server" &&
          tag(s, "rpc.method") === method,
      );
    assert.ok(served("orders", "PlaceOrder"), "orders served PlaceOrder");
    assert.ok(served("catalog", "GetProduct"), "catalog priced it");
    assert.ok(served("inventory", "ReserveStock"), "the saga reserved stock in the same trace");
    assert.ok(served("inventory", "CommitReservation"), "…and committed it");
    assert.ok(served("payments", "AuthorizePayment"), "…authorized the card");
    assert.ok(served("payments", "CapturePayment"), "…and captured it");
    const placeOrderSpan = spans.find(
      (s) => serviceOf(s) === "orders" && tag(s, "rpc.method") === "PlaceOrder",
    );
    assert.equal(tag(placeOrderSpan as JaegerSpan, "meshmart.order.id"), placed.orderId);
    const steps = spans.filter((s) => tag(s, "meshmart.saga.step") !== undefined);
    assert.ok(steps.length >= 4, `saga steps in the trace: ${steps.map((s) => s.operationName)}`);

    // Messaging conventions: the relay's publish and the consumers' process spans.
    const publishes = spans.filter((s) => tag(s, "messaging.operation.type") === "publish");
    const processes = spans.filter((s) => tag(s, "messaging.operation.type") === "process");
    for (const s of [...publishes, ...processes]) {
      assert.equal(tag(s, "messaging.system"), "nats", s.operationName);
      assert.match(String(tag(s, "messaging.destination.name")), /\./, s.operationName);
      assert.ok(tag(s, "messaging.message.id"), `${s.operationName} has a message id`);
    }
    assert.ok(
      publishes.some((s) => serviceOf(s) === "orders" && tag(s, "span.kind") === "producer"),
      "orders' relay published the order's events",
    );
    const consumed = processes.filter((s) => serviceOf(s) === "notifications");
    assert.ok(consumed.length > 0 && tag(consumed[0] as JaegerSpan, "span.kind") === "consumer");
    const byId = new Map(spans.map((s) => [s.spanID, s]));
    for (const s of consumed) {
      const parent = byId.get(s.references[0]?.spanID ?? "");
      assert.equal(
        tag(parent as JaegerSpan, "span.kind"),
        "producer",
        "consumed under its publish",
      );
    }

    // Findable by the order id, as the README says.
    const search = new URL(`${jaeger.url}/api/traces`);
    search.searchParams.set("service", "orders");
    search.searchParams.set("tags", JSON.stringify({ "meshmart.order.id": placed.orderId }));
    const { data: hits } = (await (await fetch(search)).json()) as { data: JaegerTrace[] };
    assert.deepEqual(
      hits.map((t) => t.traceID),
      [traceId],
    );
    const names = new Set(spans.map(serviceOf));
    process.stdout.write(
      `# one order: ${spans.length} spans from ${[...names].sort().join(", ")}\n`,
    );
  });

  /** Prometheus' instant query, its result vector. */
  async function query(
    expr: string,
  ): Promise<{ metric: Record<string, string>; value: [number, string] }[]> {
    const url = new URL(`${prometheus.url}/api/v1/query`);
    url.searchParams.set("query", expr);
    const body = (await (await fetch(url)).json()) as { status: string; data: { result: [] } };
    assert.equal(body.status, "success", expr);
    return body.data.result;
  }
  async function alerts(): Promise<{ labels: Record<string, string>; state: string }[]> {
    const body = (await (await fetch(`${prometheus.url}/api/v1/alerts`)).json()) as {
      data: { alerts: { labels: Record<string, string>; state: string }[] };
    };
    return body.data.alerts;
  }

  test("Prometheus scrapes every service and the edge: RED series per service and method", async () => {
    assert.ok(placed, "runs after the order");
    const jobs = [...loadCallGraph().services.keys(), EDGE_JOB];
    await waitFor("every target up", async () => {
      const up = await query('up{namespace="meshmart"} == 1');
      return jobs.every((j) => up.some((r) => r.metric.job === j)) ? true : undefined;
    });
    // A counter's first sample is no increase: the rates need calls after Prometheus has
    // seen the series, so a second order follows the first.
    await (await placeOrder(placed.token)).body?.cancel();
    const expected = [
      ["orders", "PlaceOrder"],
      ["inventory", "ReserveStock"],
      ["payments", "AuthorizePayment"],
      ["catalog", "ListProducts"],
    ];
    const has = (series: { metric: Record<string, string> }[], [job, method]: string[]) =>
      series.some((s) => s.metric.job === job && s.metric.method === method);
    // The second order's saga runs a moment after its PlaceOrder answered.
    await waitFor(
      `request rates of ${expected.map((e) => e.join(" ")).join(", ")}`,
      async () => {
        const r = await query(
          'sum by (job, method) (rate(rpc_requests_total{side="server"}[1m])) > 0',
        );
        return expected.every((e) => has(r, e));
      },
      15_000,
    );
    // Without `or … * 0` a method with no errors would have no ratio at all.
    const errors = await query(
      'sum by (job, method) (rate(rpc_requests_total{side="server", code!="ok"}[1m]) or rate(rpc_requests_total{side="server"}[1m]) * 0) / sum by (job, method) (rate(rpc_requests_total{side="server"}[1m]))',
    );
    const placeOrderErrors = errors.find(
      (s) => s.metric.job === "orders" && s.metric.method === "PlaceOrder",
    );
    assert.equal(placeOrderErrors?.value[1], "0", "PlaceOrder's error ratio");
    const latency = await query(
      'histogram_quantile(0.99, sum by (job, method, le) (rate(rpc_request_duration_seconds_bucket{side="server"}[1m])))',
    );
    const p99 = latency.find((s) => s.metric.job === "orders" && s.metric.method === "PlaceOrder");
    assert.ok(p99 !== undefined && Number(p99.value[1]) > 0, "p99 latency of PlaceOrder");
    const edge = await query(
      'sum by (job) (envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix="edge"})',
    );
    assert.ok(
      edge.some((s) => s.metric.job === EDGE_JOB && Number(s.value[1]) > 0),
      "edge requests",
    );
  });

  test("no alert in steady state; MeshmartServiceDown goes pending when payments dies", async () => {
    assert.ok(placed, "runs after the order");
    // Steady state: no saga in flight (the second order has finished), as Prometheus sees
    // it, and every rule evaluated since.
    await waitFor(
      "no saga in flight",
      async () => (await query("sum(orders_sagas_in_flight) == 0")).length === 1,
      15_000,
    );
    const settled = Date.now();
    await waitFor("a rule evaluation after that", async () => {
      const body = (await (await fetch(`${prometheus.url}/api/v1/rules`)).json()) as {
        data: { groups: { rules: { lastEvaluation: string }[] }[] };
      };
      const rules = body.data.groups.flatMap((g) => g.rules);
      return rules.length > 0 && rules.every((r) => Date.parse(r.lastEvaluation) > settled);
    });
    // Steady state: nothing pending or firing. (A p99 over two orders is a call or two,
    // which a loaded CI machine can make slow: the latency rule needs a minimum call rate.)
    assert.deepEqual(await alerts(), [], "nothing pending or firing in steady state");
    const health = (await (await fetch(`${prometheus.url}/api/v1/rules`)).json()) as {
      data: { groups: { rules: { name: string; health: string }[] }[] };
    };
    for (const rule of health.data.groups.flatMap((g) => g.rules)) {
      assert.equal(rule.health, "ok", `${rule.name} evaluates`);
    }

    // The mesh's children are unref'd: while one is killed, only a timer of ours keeps
    // node:test's event loop alive.
    const alive = setInterval(() => {}, 1_000);
    try {
      await mesh.kill("payments");
    } finally {
      clearInterval(alive);
    }
    const down = await waitFor(
      "MeshmartServiceDown for payments",
      async () =>
        (await alerts()).find(
          (a) => a.labels.alertname === "MeshmartServiceDown" && a.labels.job === "payments",
        ),
      15_000,
    );
    assert.equal(down.state, "pending");
    assert.equal(down.labels.severity, "page");
  });

  test("in a browser: the trace in Jaeger's UI, a RED query in Prometheus' graph", {
    skip: existsSync(CHROMIUM) ? false : `no browser at ${CHROMIUM}: apt-get install chromium`,
  }, async (t) => {
    assert.ok(placed, "runs after the order");
    rmSync(RESULTS, { recursive: true, force: true });
    mkdirSync(RESULTS, { recursive: true });
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    });
    try {
      const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
      // Nothing from outside this machine.
      await page.route(
        (url) => url.hostname !== "127.0.0.1",
        (route) => route.abort(),
      );

      await page.goto(`${jaeger.url}/trace/${placed.traceId}`);
      await page.waitForLoadState("networkidle");
      const text = (await page.locator("body").textContent()) ?? "";
      if (text.includes("placeholder for the Jaeger UI")) {
        // The Go module carries no UI build (jaeger-ui is built with npm from its own
        // repository): the binary serves a placeholder page instead. The query API, which
        // the tests above use, is the same either way; JAEGER_UI_ASSETS points `make up` at
        // a UI build when one is at hand.
        t.diagnostic("jaeger serves its placeholder page: this build has no UI assets");
        await page.screenshot({ path: join(RESULTS, "jaeger-trace.png") });
        await page.goto(`${jaeger.url}/api/traces/${placed.traceId}`);
        await page.screenshot({ path: join(RESULTS, "jaeger-trace-api.png") });
      } else {
        await page.getByText("PlaceOrder").first().waitFor({ timeout: 15_000 });
        await page.screenshot({ path: join(RESULTS, "jaeger-trace.png"), fullPage: true });
      }

      const expr =
        'sum by (job) (rate(rpc_requests_total{side="server", namespace="meshmart"}[1m]))';
      const graph = new URL(`${prometheus.url}/graph`);
      graph.searchParams.set("g0.expr", expr);
      graph.searchParams.set("g0.tab", "0");
      graph.searchParams.set("g0.range_input", "5m");
      await page.goto(graph.href);
      await page.waitForLoadState("networkidle");
      // Debian's Prometheus serves the classic UI: a legend line per series under the graph.
      await page.getByText('job="orders"').first().waitFor({ timeout: 15_000 });
      await page.screenshot({ path: join(RESULTS, "prometheus-rate.png") });
    } finally {
      await browser.close();
    }
  });
});
