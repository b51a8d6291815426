/**
 * The orders benchmark (`npm run bench:orders`): sustained PlaceOrder over gRPC, through
 * the real saga (catalog prices, inventory reservation, payments authorization and
 * capture) to CONFIRMED, against identity, catalog, inventory, payments and orders run as
 * separate processes (tests/support/mesh.ts, what `make up` runs) on real Postgres, Redis
 * and NATS JetStream.
 *
 * A fixed number of PlaceOrder calls stay in flight (each worker places its next order as
 * soon as the previous one is answered). Confirmations are watched on the orders stream
 * (an ordered JetStream consumer on `<ns>.orders.order.>`), so watching adds no RPC load to
 * the service measured. Prints placed/s, confirmed/s, PlaceOrder latency, the time from
 * request to CONFIRMED, the orders relay's lag (admin /metrics), and the targets.
 * Writes bench/results/orders-<timestamp>.json. See bench/orders/README.md.
 */
import { randomUUID } from "node:crypto";
import { availableParallelism, cpus } from "node:os";
import { join, relative } from "node:path";
import { fromBinary } from "@bufbuild/protobuf";
import { type Client, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createEventNames, createLogger, createPostgres } from "@meshmart/kit";
import { CatalogService } from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_service_pb.js";
import { IdentityService } from "@meshmart/kit/gen/meshmart/identity/v1/identity_service_pb.js";
import { InventoryService } from "@meshmart/kit/gen/meshmart/inventory/v1/inventory_service_pb.js";
import {
  OrderCancelledSchema,
  OrderConfirmedSchema,
} from "@meshmart/kit/gen/meshmart/orders/v1/events_pb.js";
import { OrderService } from "@meshmart/kit/gen/meshmart/orders/v1/orders_service_pb.js";
import { DeliverPolicy, jetstream } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { type Mesh, startMesh } from "../../tests/support/mesh.js";
import { serverMode } from "../catalog/children.js";
import { checkMachineQuiet } from "../catalog/proc.js";
import { cpuProfileEnv } from "../lib/cpu-profiles.js";
import { intEnv } from "../lib/env.js";
import { BENCH_ADMIN, benchServiceEnv } from "../lib/mesh-env.js";
import { printProblems, printWarnings, RESULTS, runStamp, writeResults } from "../lib/report.js";
import { runBenchmark } from "../lib/run-benchmark.js";
import { mean, sleep, stats } from "../lib/stats.js";
import { servicePids, startMeshCpu } from "./cpu.js";
import { calibrateEcho } from "./echo.js";

const SERVICES = ["identity", "catalog", "inventory", "payments", "orders"] as const;
const TARGET_CONFIRMED_PER_S = 500;
const TARGET_P99_RESPONSE_MS = 100;
const TARGET_ECHO_CALLS_PER_ORDER = 250;
const NOISE_CORES = 0.1;
const CARD = { number: "4242424242424242", expMonth: 12, expYear: 2030, cvc: "123" };

const settings = {
  durationSeconds: intEnv("BENCH_DURATION_S", 30),
  warmupSeconds: intEnv("BENCH_WARMUP_S", 5, 0),
  concurrency: intEnv("BENCH_CONCURRENCY", 32),
  products: intEnv("BENCH_PRODUCTS", 32),
  customers: intEnv("BENCH_CUSTOMERS", 8),
  /** After the window: how long placed orders get to reach a terminal state. */
  settleSeconds: intEnv("BENCH_SETTLE_S", 20, 0),
  /** Orders' SAGA_CONCURRENCY; unset keeps the service's default. */
  sagaConcurrency: process.env.BENCH_SAGA_CONCURRENCY,
  /**
   * respond: a worker places its next order when PlaceOrder answers (the front door's
   * pace). confirm: when its order is CONFIRMED, so at most `concurrency` orders are open.
   * idle: confirm with one order at a time (BENCH_CONCURRENCY ignored), and where each
   * order's time goes, from the services' own histograms.
   */
  mode: modeEnv(),
  /** Services run under the CPU profiler (comma-separated); figures then are not comparable. */
  cpuProf: (process.env.BENCH_CPU_PROF ?? "").split(",").filter((s) => s !== ""),
};
if (settings.mode === "idle") settings.concurrency = 1;
/** Whether workers wait for their order's terminal event (a steady state, CPU per order). */
const waitsForTerminal = settings.mode !== "respond";
function modeEnv(): "respond" | "confirm" | "idle" {
  const raw = process.env.BENCH_MODE ?? "respond";
  if (raw === "respond" || raw === "confirm" || raw === "idle") return raw;
  console.error(`BENCH_MODE must be respond, confirm or idle, got '${raw}'`);
  process.exit(2);
}

const say = (line = ""): void => {
  process.stdout.write(`${line}\n`);
};
const warnings: string[] = [];
const cleanups: (() => Promise<unknown>)[] = [];

/** One order as this run saw it. Times are wall-clock ms (performance.timeOrigin based). */
interface Tracked {
  startedAt: number;
  measured: boolean;
  /** When the OrderConfirmed/OrderCancelled event reached us from JetStream. */
  deliveredAt?: number;
  /** The event's occurred_at: when orders committed the terminal state. */
  terminalAt?: number;
  status?: "CONFIRMED" | "CANCELLED";
}

interface Store {
  productIds: string[];
  tokens: string[];
}

const wallNow = () => performance.timeOrigin + performance.now();

async function main(): Promise<void> {
  const started = new Date();
  say(`meshmart orders benchmark: ${started.toISOString()}`);
  say(`node ${process.version}, ${cpus()[0]?.model ?? "?"} x${availableParallelism()}`);
  say(
    `services: ${serverMode() === "compiled" ? "compiled, as the images run" : "from source under tsx (BENCH_SOURCE=1)"}`,
  );
  say(
    `mode ${settings.mode}: ${settings.concurrency} ${!waitsForTerminal ? "PlaceOrder calls in flight" : "orders open (placed, not yet CONFIRMED)"} over gRPC; warm-up ${settings.warmupSeconds} s, ` +
      `measured ${settings.durationSeconds} s; ${settings.products} products, ${settings.customers} customers, card ${CARD.number.slice(-4)}`,
  );
  const busy = await checkMachineQuiet(say, warnings);
  // The unit of CPU: measured before the mesh starts and again once its orders settled.
  const echoBefore = await calibrateEcho();
  say(`bare grpc-js echo: ${echoBefore.usPerCall.toFixed(1)} µs CPU per call (before the mesh)`);

  // Mesh children are unref'd; this keeps the run alive while it only awaits them.
  const keepAlive = setInterval(() => {}, 1_000);
  cleanups.push(async () => clearInterval(keepAlive));
  const t0 = performance.now();
  const profiles = join(RESULTS, `profiles-orders-${runStamp(started)}`);
  const profileEnv = await cpuProfileEnv(settings.cpuProf, profiles);
  if (settings.cpuProf.length > 0) {
    warnings.push(`${settings.cpuProf.join(", ")} ran under --cpu-prof: figures not comparable`);
    say(`profiles (once the mesh stops): ${relative(process.cwd(), profiles)}`);
  }
  const serviceEnv: Record<string, Record<string, string>> = {
    ...benchServiceEnv(),
    orders:
      settings.sagaConcurrency === undefined ? {} : { SAGA_CONCURRENCY: settings.sagaConcurrency },
  };
  for (const [name, env] of Object.entries(profileEnv)) {
    serviceEnv[name] = { ...serviceEnv[name], ...env };
  }
  const mesh = await startMesh({
    label: "bench_orders",
    services: SERVICES,
    compiled: serverMode() === "compiled",
    env: {
      SEED_DEMO: "false",
      // Every service's outbox relay: how long a wake-up gathers commits before its batch.
      ...(process.env.BENCH_OUTBOX_GATHER_MS === undefined
        ? {}
        : { OUTBOX_GATHER_MS: process.env.BENCH_OUTBOX_GATHER_MS }),
    },
    serviceEnv,
  });
  // Drops the databases and the namespace's streams.
  cleanups.push(() => mesh.stop());
  say(`mesh up in ${((performance.now() - t0) / 1000).toFixed(1)} s (namespace ${mesh.namespace})`);

  const store = await prepareStore(mesh);
  const pids = servicePids();
  for (const name of SERVICES) {
    if (pids.get(name) === undefined) warnings.push(`no process found for ${name}`);
  }

  const nc = await connect({ servers: mesh.infra.natsUrl, name: "bench-orders" });
  cleanups.push(() => nc.close());
  const tracked = new Map<string, Tracked>();
  // BENCH_MODE=confirm: workers waiting for their order's terminal event.
  const waiters = new Map<string, () => void>();
  // An event can overtake its PlaceOrder response.
  const early = new Map<string, Omit<Tracked, "startedAt" | "measured">>();
  const watcher = await watchTerminal(nc, mesh.namespace, (orderId, terminal) => {
    const order = tracked.get(orderId);
    if (order === undefined) early.set(orderId, terminal);
    else Object.assign(order, terminal);
    const wake = waiters.get(orderId);
    waiters.delete(orderId);
    wake?.();
  });
  const terminal = (id: string, order: Tracked) =>
    new Promise<void>((resolve, reject) => {
      if (order.status !== undefined) return resolve();
      const timer = setTimeout(() => {
        waiters.delete(id);
        reject(new Error(`order ${id}: no terminal event within 30 s`));
      }, 30_000);
      waiters.set(id, () => {
        clearTimeout(timer);
        resolve();
      });
    });

  const transport = createGrpcTransport({
    baseUrl: `http://127.0.0.1:${mesh.ports("orders").grpc}`,
  });
  const orders = createClient(OrderService, transport);
  const adminUrl = `http://127.0.0.1:${mesh.ports("orders").admin}/metrics`;

  // Phases: warm-up (not measured), the window, then no new orders.
  const warmupEnds = wallNow() + settings.warmupSeconds * 1000;
  const windowEnds = warmupEnds + settings.durationSeconds * 1000;
  const responseMs: number[] = [];
  const errors = new Map<string, number>();
  let placedInWindow = 0;
  let n = 0;
  const worker = async () => {
    while (wallNow() < windowEnds) {
      const i = n++;
      const startedAt = wallNow();
      const measured = startedAt >= warmupEnds;
      try {
        const id = await placeOne(orders, store, i);
        const answeredAt = wallNow();
        const order: Tracked = { startedAt, measured, ...early.get(id) };
        early.delete(id);
        tracked.set(id, order);
        if (measured) responseMs.push(answeredAt - startedAt);
        if (answeredAt >= warmupEnds && answeredAt < windowEnds) placedInWindow++;
        if (waitsForTerminal) await terminal(id, order);
      } catch (reason) {
        const code = reason instanceof ConnectError ? String(reason.code) : "client";
        errors.set(code, (errors.get(code) ?? 0) + 1);
        if (errors.size === 1 && (errors.get(code) ?? 0) === 1) {
          say(`first PlaceOrder error: ${reason instanceof Error ? reason.message : reason}`);
        }
        await sleep(50);
      }
    }
  };

  // Relay lag and CPU, sampled over the measured window only.
  const lag: { at: number; lagSeconds: number; pending: number; sagas: number }[] = [];
  let sampling = true;
  const lagSampler = (async () => {
    while (sampling) {
      const now = wallNow();
      if (now >= warmupEnds && now < windowEnds) {
        const m = await scrape(adminUrl).catch(() => new Map<string, number>());
        lag.push({
          at: (now - warmupEnds) / 1000,
          lagSeconds: m.get("outbox_lag_seconds") ?? Number.NaN,
          pending: m.get("outbox_pending") ?? Number.NaN,
          sagas: m.get("orders_sagas_in_flight") ?? Number.NaN,
        });
      }
      await sleep(1_000);
    }
  })();
  // idle: the services' histograms at the window's edges (where an order's time goes).
  const histogramUrls = SERVICES.filter((s) => s !== "identity" && s !== "catalog").map(
    (name) => [name, `http://127.0.0.1:${mesh.ports(name).admin}/metrics`] as const,
  );
  let histogramsAtStart: Promise<Map<string, HistogramSum>> | undefined;
  // Exactly the window: calls still in flight when it closes are not in it.
  let used: ReturnType<ReturnType<typeof startMeshCpu>["stop"]> | undefined;
  const cpuWindow = (async () => {
    await sleep(warmupEnds - wallNow());
    if (settings.mode === "idle") histogramsAtStart = scrapeHistograms(histogramUrls);
    const cpu = startMeshCpu(pids);
    await sleep(windowEnds - wallNow());
    used = cpu.stop();
  })();

  say(`placing orders: warm-up ${settings.warmupSeconds} s, then ${settings.durationSeconds} s…`);
  await Promise.all(Array.from({ length: settings.concurrency }, worker));
  await cpuWindow;
  const histogramsAtEnd = settings.mode === "idle" ? scrapeHistograms(histogramUrls) : undefined;
  sampling = false;
  await lagSampler;
  const windowSeconds = settings.durationSeconds;

  // Confirmations whose commit fell inside the window, whenever the order was placed.
  const inWindow = (o: Tracked) =>
    o.terminalAt !== undefined && o.terminalAt >= warmupEnds && o.terminalAt < windowEnds;
  const all = [...tracked.values()];
  const confirmedInWindow = all.filter((o) => o.status === "CONFIRMED" && inWindow(o)).length;
  const backlogAtEnd = all.filter(
    (o) => o.terminalAt === undefined || o.terminalAt >= windowEnds,
  ).length;

  // Settle: every placed order (warm-up included) reaches CONFIRMED or CANCELLED.
  const settleStart = performance.now();
  while (
    all.some((o) => o.status === undefined) &&
    performance.now() - settleStart < settings.settleSeconds * 1000
  ) {
    await sleep(100);
  }
  const settledSeconds = (performance.now() - settleStart) / 1000;
  const unsettled = all.filter((o) => o.status === undefined).length;
  await watcher.stop();

  const measured = all.filter((o) => o.measured);
  const confirmedMeasured = measured.filter((o) => o.status === "CONFIRMED");
  const cancelled = all.filter((o) => o.status === "CANCELLED").length;
  const toConfirmed = confirmedMeasured.map((o) => (o.terminalAt ?? 0) - o.startedAt);
  const toDelivered = confirmedMeasured.map((o) => (o.deliveredAt ?? 0) - o.startedAt);
  const eventLag = confirmedMeasured.map((o) => (o.deliveredAt ?? 0) - (o.terminalAt ?? 0));
  const db = await countInDatabase(mesh);
  const echoAfter = await calibrateEcho();
  const echoUs = (echoBefore.usPerCall + echoAfter.usPerCall) / 2;
  const errorCount = [...errors.values()].reduce((a, b) => a + b, 0);
  const problems: string[] = [];
  if (errorCount > 0) {
    problems.push(
      `PlaceOrder errors: ${[...errors].map(([c, k]) => `${k} x code ${c}`).join(", ")}`,
    );
  }
  if (cancelled > 0) problems.push(`${cancelled} orders CANCELLED (stock and card should confirm)`);
  // A backlog still draining is a finding, not a failure; a lost order is.
  if (unsettled > 0 && waitsForTerminal) {
    problems.push(`${unsettled} orders not terminal ${settings.settleSeconds} s after the window`);
  }
  const eventsConfirmed = all.filter((o) => o.status === "CONFIRMED").length;
  const dbTotal = Object.values(db).reduce((a, b) => a + b, 0);
  if ((db.CONFIRMED ?? 0) < eventsConfirmed || dbTotal !== all.length) {
    problems.push(
      `orders database: ${dbTotal} orders, ${db.CONFIRMED ?? 0} CONFIRMED; this run placed ${all.length}, the stream delivered ${eventsConfirmed} OrderConfirmed`,
    );
  }

  const placedPerS = placedInWindow / windowSeconds;
  const confirmedPerS = confirmedInWindow / windowSeconds;
  const resp = stats(responseMs);
  const conf = stats(toConfirmed);
  const deliv = stats(toDelivered);
  const evLag = stats(eventLag);
  const lagValues = lag.map((s) => s.lagSeconds).filter(Number.isFinite);
  const pendingValues = lag.map((s) => s.pending).filter(Number.isFinite);
  const sagaValues = lag.map((s) => s.sagas).filter(Number.isFinite);
  const throughputMet = confirmedPerS >= TARGET_CONFIRMED_PER_S;
  const latencyMet = resp.p99 < TARGET_P99_RESPONSE_MS;
  if (used !== undefined && used.othersCores > NOISE_CORES) {
    warnings.push(
      `other processes used ${used.othersCores.toFixed(2)} cores during the window (other tests on the machine?)`,
    );
  }

  const f = (v: number, d = 1) => (Number.isFinite(v) ? v.toFixed(d) : "-");
  const met = (ok: boolean) => (ok ? "MET" : "NOT MET");
  say();
  say(`${"".padEnd(42)}${"value".padStart(18)}   target`);
  const row = (label: string, value: string, target = "") =>
    say(`${label.padEnd(42)}${value.padStart(18)}   ${target}`);
  row("orders placed/s", f(placedPerS), "");
  row(
    "confirmed orders/s",
    f(confirmedPerS),
    `>= ${TARGET_CONFIRMED_PER_S}   ${met(throughputMet)}`,
  );
  row(
    "PlaceOrder response p50 / p99 ms",
    `${f(resp.p50)} / ${f(resp.p99)}`,
    `p99 < ${TARGET_P99_RESPONSE_MS}  ${met(latencyMet)}`,
  );
  row("request -> CONFIRMED p50 / p99 ms", `${f(conf.p50)} / ${f(conf.p99)}`, "(committed)");
  row(
    "request -> OrderConfirmed seen p50 / p99",
    `${f(deliv.p50)} / ${f(deliv.p99)}`,
    "(via relay and JetStream)",
  );
  row(
    "commit -> event delivered p50 / p99 ms",
    `${f(evLag.p50)} / ${f(evLag.p99)}`,
    "(relay + JetStream)",
  );
  row(
    "orders relay lag s mean / max",
    `${f(mean(lagValues), 2)} / ${f(Math.max(...lagValues), 2)}`,
    `(outbox_lag_seconds, ${lagValues.length} samples)`,
  );
  row(
    "orders outbox pending mean / max",
    `${f(mean(pendingValues), 0)} / ${f(Math.max(...pendingValues), 0)}`,
    "(outbox_pending)",
  );
  row(
    "sagas in flight mean / max",
    `${f(mean(sagaValues), 0)} / ${f(Math.max(...sagaValues), 0)}`,
    "(orders_sagas_in_flight)",
  );
  say();
  say(
    `  orders: ${placedInWindow} placed and ${confirmedInWindow} confirmed in the ${windowSeconds} s window; ` +
      `${backlogAtEnd} placed but not yet terminal when it closed; ` +
      (unsettled === 0
        ? `all terminal ${f(settledSeconds)} s later`
        : `${unsettled} still PENDING ${f(settledSeconds)} s later (not waited for)`),
  );
  if (settings.mode === "respond" && placedPerS > confirmedPerS * 1.1) {
    say(
      `  NOTE: PlaceOrder accepts ${f(placedPerS - confirmedPerS)} orders/s more than the saga confirms: the PENDING ` +
        "backlog grows all run long, so request -> CONFIRMED measures that queue and grows with " +
        "BENCH_DURATION_S. BENCH_MODE=confirm measures the saga at a steady state.",
    );
  }
  say(
    `  in all ${all.length} placed (warm-up included): ${eventsConfirmed} CONFIRMED, ${cancelled} CANCELLED, ${unsettled} unsettled; ` +
      `orders database: ${Object.entries(db)
        .map(([s, k]) => `${k} ${s}`)
        .join(", ")}`,
  );
  if (used !== undefined) {
    const parts = Object.entries(used.cores).map(([name, c]) => `${name} ${f(c, 2)}`);
    say(`  CPU in the window, cores: ${parts.join(", ")}, others ${f(used.othersCores, 2)}`);
    const usPerOrder = (used.totalOurs * 1e6) / Math.max(1, confirmedInWindow);
    // Only at a steady state is all the CPU spent on the orders confirmed.
    if (waitsForTerminal) {
      const { wallSeconds } = used;
      const each = Object.entries(used.cores).map(
        ([name, c]) => `${name} ${f((c * wallSeconds * 1e6) / Math.max(1, confirmedInWindow), 0)}`,
      );
      say(
        `  CPU per confirmed order: ${f(usPerOrder, 0)} µs (${each.join(", ")}); ` +
          `all ${availableParallelism()} cores at 100% would be ~${f((availableParallelism() * 1e6) / usPerOrder, 0)} orders/s`,
      );
      const echoEach = Object.entries(used.cores).map(
        ([name, c]) =>
          `${name} ${f((c * wallSeconds * 1e6) / Math.max(1, confirmedInWindow) / echoUs, 0)}`,
      );
      say(
        `  CPU per confirmed order in bare grpc-js echo calls: ${f(usPerOrder / echoUs, 0)} ` +
          `(${echoEach.join(", ")}); target <= ${TARGET_ECHO_CALLS_PER_ORDER}`,
      );
      // The runner is the load generator (a connect-node client and a JetStream consumer):
      // what the system itself costs is the rest.
      const runnerUs =
        ((used.cores.runner ?? 0) * wallSeconds * 1e6) / Math.max(1, confirmedInWindow);
      say(
        `  the same without the runner (services, Postgres, NATS, Redis): ${f((usPerOrder - runnerUs) / echoUs, 0)}`,
      );
    }
  }
  say(
    `  bare grpc-js echo, server CPU per call: ${f(echoBefore.usPerCall)} µs before the mesh, ` +
      `${f(echoAfter.usPerCall)} µs after (${f(echoUs)} µs the unit above)`,
  );
  const breakdown =
    histogramsAtStart === undefined || histogramsAtEnd === undefined
      ? undefined
      : timeBreakdown(await histogramsAtStart, await histogramsAtEnd, confirmedMeasured.length);
  if (breakdown !== undefined) {
    say(
      "  where an idle order's time goes (services' histograms over the window, per confirmed order):",
    );
    for (const line of breakdown)
      say(
        `    ${line.label.padEnd(58)} ${f(line.perOrder, 2).padStart(5)} x ${f(line.meanMs, 2).padStart(7)} ms`,
      );
  }
  printProblems(
    say,
    "PROBLEMS DURING THE RUN: the figures above may not mean what they say",
    problems,
  );
  printWarnings(say, warnings);

  const resultsFile = await writeResults("orders", started, {
    settings,
    machineBusyBefore: busy,
    placedPerS,
    confirmedPerS,
    placeOrderResponseMs: resp,
    requestToConfirmedMs: conf,
    requestToEventDeliveredMs: deliv,
    commitToEventDeliveredMs: evLag,
    relayLagSamples: lag,
    counts: {
      placedInWindow,
      confirmedInWindow,
      backlogAtEnd,
      placedTotal: all.length,
      confirmedTotal: eventsConfirmed,
      cancelled,
      unsettled,
      settledSeconds,
      database: db,
    },
    errors: Object.fromEntries(errors),
    cpuInWindow: used,
    echo: { before: echoBefore, after: echoAfter, usPerCall: echoUs },
    echoCallsPerConfirmedOrder:
      used !== undefined && waitsForTerminal
        ? (used.totalOurs * 1e6) / Math.max(1, confirmedInWindow) / echoUs
        : undefined,
    idleBreakdown: breakdown,
    targets: {
      confirmedPerS: { target: TARGET_CONFIRMED_PER_S, met: throughputMet },
      p99ResponseMs: { target: TARGET_P99_RESPONSE_MS, met: latencyMet },
    },
    problems,
    warnings,
  });
  say(`results: ${resultsFile}`);
  if (problems.length > 0) process.exitCode = 1;
}

/** Products with plenty of stock and a few signed-in customers, as tests/chaos/chaos.ts does. */
async function prepareStore(mesh: Mesh): Promise<Store> {
  const at = (name: string) =>
    createGrpcTransport({ baseUrl: `http://127.0.0.1:${mesh.ports(name).grpc}` });
  const identity = createClient(IdentityService, at("identity"));
  const catalog = createClient(CatalogService, at("catalog"));
  const inventory = createClient(InventoryService, at("inventory"));
  const admin = await identity.login(BENCH_ADMIN);
  const auth = { headers: { authorization: `Bearer ${admin.accessToken}` } };
  const productIds: string[] = [];
  for (let i = 0; i < settings.products; i++) {
    const sku = `BENCH-${i}-${randomUUID().slice(0, 6).toUpperCase()}`;
    const { product } = await catalog.createProduct(
      {
        requestId: randomUUID(),
        sku,
        name: `Bench item ${i}`,
        category: "bench",
        price: { currencyCode: "EUR", units: BigInt(3 + (i % 7)), nanos: 500_000_000 },
      },
      auth,
    );
    if (product === undefined) throw new Error("CreateProduct returned no product");
    // Far more than any run can sell: every order confirms.
    await inventory.setStock({ productId: product.id, sku, onHand: 1_000_000n }, auth);
    productIds.push(product.id);
  }
  const tokens: string[] = [];
  for (let i = 0; i < settings.customers; i++) {
    const email = `bench-${i}-${randomUUID().slice(0, 8)}@example.com`;
    const password = "correct horse battery staple";
    await identity.signUp({ email, password, displayName: `Bench ${i}` });
    tokens.push((await identity.login({ email, password })).accessToken);
  }
  return { productIds, tokens };
}

async function placeOne(
  orders: Client<typeof OrderService>,
  store: Store,
  i: number,
): Promise<string> {
  const token = store.tokens[i % store.tokens.length] ?? "";
  const productId = store.productIds[Math.floor(Math.random() * store.productIds.length)] ?? "";
  const { order } = await orders.placeOrder(
    { requestId: randomUUID(), items: [{ productId, quantity: 1 }], payment: { card: CARD } },
    { headers: { authorization: `Bearer ${token}` }, timeoutMs: 10_000 },
  );
  if (order === undefined) throw new Error("PlaceOrder returned no order");
  return order.id;
}

/**
 * An ordered consumer on the namespace's orders stream, new messages only: each
 * OrderConfirmed / OrderCancelled is reported with its occurred_at (the commit) and
 * its arrival here.
 */
async function watchTerminal(
  nc: NatsConnection,
  namespace: string,
  onTerminal: (
    orderId: string,
    terminal: { deliveredAt: number; terminalAt: number; status: "CONFIRMED" | "CANCELLED" },
  ) => void,
): Promise<{ stop(): Promise<void> }> {
  const names = createEventNames(namespace);
  const confirmed = names.subjectOf(OrderConfirmedSchema);
  const cancelled = names.subjectOf(OrderCancelledSchema);
  // One filter subject: NATS servers before 2.10 take no more.
  const consumer = await jetstream(nc).consumers.get(names.stream("orders"), {
    filter_subjects: `${namespace}.orders.order.>`,
    deliver_policy: DeliverPolicy.New,
  });
  const messages = await consumer.consume({ max_messages: 1_000 });
  const loop = (async () => {
    for await (const msg of messages) {
      const deliveredAt = wallNow();
      const schema =
        msg.subject === confirmed
          ? OrderConfirmedSchema
          : msg.subject === cancelled
            ? OrderCancelledSchema
            : undefined;
      if (schema === undefined) continue;
      const event = fromBinary(schema, msg.data);
      const at = event.occurredAt;
      const terminalAt =
        at === undefined ? deliveredAt : Number(at.seconds) * 1000 + at.nanos / 1_000_000;
      onTerminal(event.orderId, {
        deliveredAt,
        terminalAt,
        status: schema === OrderConfirmedSchema ? "CONFIRMED" : "CANCELLED",
      });
    }
  })();
  return {
    async stop() {
      await messages.close();
      await loop;
    },
  };
}

/** The admin /metrics as name → value (unlabelled series, or the first of a name). */
async function scrape(url: string): Promise<Map<string, number>> {
  const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
  const text = await res.text();
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m?.[1] !== undefined && m[3] !== undefined && !out.has(m[1])) {
      out.set(m[1], Number(m[3]));
    }
  }
  return out;
}

/** A histogram series' running sum (seconds) and count. */
interface HistogramSum {
  sum: number;
  count: number;
}

/**
 * Every `db_operation_duration_seconds` and `rpc_request_duration_seconds` series of each
 * service, keyed `<service> <labels>`.
 */
async function scrapeHistograms(
  urls: readonly (readonly [string, string])[],
): Promise<Map<string, HistogramSum>> {
  const out = new Map<string, HistogramSum>();
  for (const [service, url] of urls) {
    const res = await fetch(url, { signal: AbortSignal.timeout(2_000) }).catch(() => undefined);
    const text = (await res?.text()) ?? "";
    for (const line of text.split("\n")) {
      const m =
        /^(db_operation_duration_seconds|rpc_request_duration_seconds)_(sum|count)\{([^}]*)\}\s+(\S+)/.exec(
          line,
        );
      if (m?.[1] === undefined || m[3] === undefined || m[4] === undefined) continue;
      const labels = m[3].replaceAll('"', "").replace(/,?outcome=ok/, "");
      if (labels.includes("outcome=")) continue;
      const key = `${service} ${m[1].startsWith("db") ? "db" : "rpc"} ${labels}`;
      const entry = out.get(key) ?? { sum: 0, count: 0 };
      if (m[2] === "sum") entry.sum = Number(m[4]);
      else entry.count = Number(m[4]);
      out.set(key, entry);
    }
  }
  return out;
}

/** Per series: how often per order and how long each, over the window. */
function timeBreakdown(
  start: Map<string, HistogramSum>,
  end: Map<string, HistogramSum>,
  orders: number,
): { label: string; perOrder: number; meanMs: number }[] {
  const lines: { label: string; perOrder: number; meanMs: number }[] = [];
  for (const [key, e] of end) {
    const s = start.get(key) ?? { sum: 0, count: 0 };
    const count = e.count - s.count;
    if (count <= 0) continue;
    lines.push({
      label: key.replace(/service=meshmart\.[a-z]+\.v1\./, ""),
      perOrder: count / Math.max(1, orders),
      meanMs: ((e.sum - s.sum) * 1000) / count,
    });
  }
  return lines.sort((a, b) => a.label.localeCompare(b.label));
}

/** Orders by status in the orders database (the cross-check of what the stream showed). */
async function countInDatabase(mesh: Mesh): Promise<Record<string, number>> {
  const sql = createPostgres({
    url: mesh.databaseUrl("orders"),
    service: "bench",
    logger: createLogger({ service: "bench", level: "silent" }),
    max: 1,
  });
  try {
    const rows = await sql<{ status: string; n: bigint }[]>`
      select status, count(*) as n from orders group by status order by status`;
    return Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]));
  } finally {
    await sql.end({ timeout: 1 });
  }
}

async function cleanup(): Promise<void> {
  for (const c of cleanups.reverse()) await c().catch(() => {});
  cleanups.length = 0;
}

await runBenchmark(main, cleanup);
