/**
 * The flash-sale benchmark (`npm run bench:flash`): a burst of PlaceOrder calls for far
 * more units than exist, against identity, catalog, inventory, payments and orders run as
 * separate compiled processes (tests/support/mesh.ts, what `make up` runs) on real
 * Postgres, Redis and NATS JetStream.
 *
 *   hot-1   BENCH_FLASH_ORDERS orders from BENCH_FLASH_CUSTOMERS customers for one SKU with
 *           BENCH_FLASH_STOCK units, all sent within BENCH_FLASH_SEND_MS.
 *   hot-N   the same number of orders spread over BENCH_FLASH_HOT_SKUS SKUs at once, the
 *           same stock in all (split evenly), so both phases confirm the same number.
 *
 * Every order PlaceOrder did not answer terminal is followed with WatchOrder, as a
 * storefront does. Prints, per phase: time from the last PlaceOrder until every order is
 * terminal, how many confirmed (must be the
 * stock), PlaceOrder p50/p99, request → terminal for CONFIRMED and CANCELLED apart, saga
 * retries (orders' /metrics), lock waits in inventory's and orders' databases (sampled from
 * pg_stat_activity), and the stock invariants (never negative, nothing left reserved).
 * Writes bench/results/flash-<timestamp>.json. See bench/flash/README.md.
 */
import { randomUUID } from "node:crypto";
import { availableParallelism, cpus } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createLogger, createPostgres, type Sql } from "@meshmart/kit";
import { CatalogService } from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_service_pb.js";
import { IdentityService } from "@meshmart/kit/gen/meshmart/identity/v1/identity_service_pb.js";
import { InventoryService } from "@meshmart/kit/gen/meshmart/inventory/v1/inventory_service_pb.js";
import {
  CancelCode,
  type Order,
  OrderStatus,
} from "@meshmart/kit/gen/meshmart/orders/v1/orders_pb.js";
import { type Mesh, startMesh } from "../../tests/support/mesh.js";
import { serverMode } from "../catalog/children.js";
import { checkMachineQuiet } from "../catalog/proc.js";
import { cpuProfileEnv } from "../lib/cpu-profiles.js";
import { intEnv } from "../lib/env.js";
import { BENCH_ADMIN, benchServiceEnv } from "../lib/mesh-env.js";
import { printProblems, printWarnings, runStamp, writeResults } from "../lib/report.js";
import { runBenchmark } from "../lib/run-benchmark.js";
import { mean, type Stats, sleep, stats } from "../lib/stats.js";
import { servicePids, startMeshCpu } from "../orders/cpu.js";
import { CallError, createOrdersClient, type OrdersClient } from "./orders-client.js";

const SERVICES = ["identity", "catalog", "inventory", "payments", "orders"] as const;
const TARGET_ALL_TERMINAL_MS = 6_000;
const TARGET_P99_PLACE_MS = 1_500;
const NOISE_CORES = 0.1;
const RESULTS = join(dirname(fileURLToPath(import.meta.url)), "..", "results");
const CARD = { number: "4242424242424242", expMonth: 12, expYear: 2030, cvc: "123" };

const settings = {
  /** PlaceOrder calls per phase. */
  orders: intEnv("BENCH_FLASH_ORDERS", 1_000),
  customers: intEnv("BENCH_FLASH_CUSTOMERS", 50),
  /** Units for sale in each phase (split over the SKUs in the hot-N phase). */
  stock: intEnv("BENCH_FLASH_STOCK", 100),
  /** The burst: every PlaceOrder of a phase starts within this many ms, evenly spread. */
  sendMs: intEnv("BENCH_FLASH_SEND_MS", 1_000),
  /** SKUs of the second phase; 0 skips it. */
  hotSkus: intEnv("BENCH_FLASH_HOT_SKUS", 10, 0),
  /** Orders placed and finished before the first phase, so no phase meets a cold mesh. */
  warmupOrders: intEnv("BENCH_FLASH_WARMUP", 20, 0),
  /** Longest a phase waits for its orders to be terminal after the last PlaceOrder. */
  settleSeconds: intEnv("BENCH_FLASH_SETTLE_S", 60),
  /** pg_stat_activity and stock sampling interval. */
  sampleMs: intEnv("BENCH_FLASH_SAMPLE_MS", 25),
  /** Deadline of each PlaceOrder call. */
  placeTimeoutMs: intEnv("BENCH_FLASH_PLACE_TIMEOUT_MS", 30_000),
  /** Orders' SAGA_CONCURRENCY; unset keeps the service's default. */
  sagaConcurrency: process.env.BENCH_SAGA_CONCURRENCY,
  /** Services run under `node --cpu-prof` (comma-separated); figures then are not comparable. */
  cpuProf: (process.env.BENCH_CPU_PROF ?? "").split(",").filter((s) => s !== ""),
};

const say = (line = ""): void => {
  process.stdout.write(`${line}\n`);
};
const warnings: string[] = [];
const cleanups: (() => Promise<unknown>)[] = [];
const wallNow = () => performance.timeOrigin + performance.now();

/** A customer: its own HTTP/2 connection to orders, calling with its token. */
interface Customer {
  orders: OrdersClient;
}

/** One order as this run saw it. Times are wall-clock ms. */
interface Tracked {
  id: string;
  sku: string;
  sentAt: number;
  answeredAt: number;
  /** The order's update_time when the watch saw it terminal: the terminal commit. */
  terminalAt?: number;
  /** When the terminal state reached this client over WatchOrder. */
  seenAt?: number;
  status?: "CONFIRMED" | "CANCELLED";
  cancelCode?: string;
}

/** pg_stat_activity over a phase, per database: backends waiting on a lock. */
interface LockWaits {
  samples: number;
  /** Samples in which at least one backend waited on a lock. */
  samplesWaiting: number;
  meanWaiting: number;
  maxWaiting: number;
  /** Sum over samples of waiters × interval: roughly the time backends spent waiting. */
  waiterSeconds: number;
}

interface Services {
  identity: Client<typeof IdentityService>;
  catalog: Client<typeof CatalogService>;
  inventory: Client<typeof InventoryService>;
  adminAuth: { headers: Record<string, string> };
}

async function main(): Promise<void> {
  const started = new Date();
  say(`meshmart flash-sale benchmark: ${started.toISOString()}`);
  say(`node ${process.version}, ${cpus()[0]?.model ?? "?"} x${availableParallelism()}`);
  say(
    `services: ${serverMode() === "compiled" ? "compiled, as the images run" : "from source under tsx (BENCH_SOURCE=1)"}`,
  );
  say(
    `${settings.orders} orders per phase from ${settings.customers} customers within ${settings.sendMs} ms, ` +
      `${settings.stock} units for sale; phases: 1 SKU${settings.hotSkus > 0 ? `, then ${settings.hotSkus} SKUs at once` : ""}`,
  );
  const busy = await checkMachineQuiet(say, warnings);

  // Mesh children are unref'd; this keeps the run alive while it only awaits them.
  const keepAlive = setInterval(() => {}, 1_000);
  cleanups.push(async () => clearInterval(keepAlive));
  const t0 = performance.now();
  const profiles = join(RESULTS, `profiles-flash-${runStamp(started)}`);
  const serviceEnv: Record<string, Record<string, string>> = {
    ...benchServiceEnv(),
    orders: {
      ...(settings.sagaConcurrency === undefined
        ? {}
        : { SAGA_CONCURRENCY: settings.sagaConcurrency }),
      ...(process.env.BENCH_ORDERS_POOL === undefined
        ? {}
        : { DATABASE_POOL_MAX: process.env.BENCH_ORDERS_POOL }),
    },
  };
  const profileEnv = await cpuProfileEnv(settings.cpuProf, profiles);
  for (const [name, env] of Object.entries(profileEnv)) {
    serviceEnv[name] = { ...serviceEnv[name], ...env };
  }
  if (settings.cpuProf.length > 0) {
    warnings.push(`${settings.cpuProf.join(", ")} ran under --cpu-prof: figures not comparable`);
  }
  const mesh = await startMesh({
    label: "bench_flash",
    services: SERVICES,
    compiled: serverMode() === "compiled",
    env: { SEED_DEMO: "false" },
    serviceEnv,
  });
  cleanups.push(() => mesh.stop());
  say(`mesh up in ${((performance.now() - t0) / 1000).toFixed(1)} s (namespace ${mesh.namespace})`);

  const services = await connectServices(mesh);
  const customers = await signUpCustomers(mesh, services);
  const pids = servicePids();
  for (const name of SERVICES) {
    if (pids.get(name) === undefined) warnings.push(`no process found for ${name}`);
  }

  const logger = createLogger({ service: "bench", level: "silent" });
  const open = (url: string) => {
    const sql = createPostgres({ url, service: "bench-flash", logger, max: 1 });
    cleanups.push(() => sql.end({ timeout: 1 }));
    return sql;
  };
  const db = {
    cluster: open(mesh.infra.postgresUrl),
    inventory: open(mesh.databaseUrl("inventory")),
    orders: open(mesh.databaseUrl("orders")),
  };
  const dbNames = {
    inventory: new URL(mesh.databaseUrl("inventory")).pathname.slice(1),
    orders: new URL(mesh.databaseUrl("orders")).pathname.slice(1),
  };

  if (settings.warmupOrders > 0) {
    const t = performance.now();
    const [warm] = await createSkus(services, 1, settings.warmupOrders * 10, "WARM");
    if (warm === undefined) throw new Error("no warm-up product");
    const placed = await Promise.all(
      Array.from({ length: settings.warmupOrders }, (_, i) =>
        placeAndWatch(customers[i % customers.length] as Customer, warm, wallNow(), "warm-up"),
      ),
    );
    await Promise.all(placed.map((p) => p.done));
    say(
      `warm-up: ${settings.warmupOrders} orders terminal in ${((performance.now() - t) / 1000).toFixed(1)} s`,
    );
  }

  const phases: PhaseResult[] = [];
  phases.push(await runPhase("hot-1", 1, { mesh, services, customers, db, dbNames, pids }));
  if (settings.hotSkus > 0) {
    await sleep(2_000);
    phases.push(
      await runPhase(`hot-${settings.hotSkus}`, settings.hotSkus, {
        mesh,
        services,
        customers,
        db,
        dbNames,
        pids,
      }),
    );
  }

  say();
  for (const phase of phases) printPhase(phase);
  // The services run at LOG_LEVEL=warn (every refused RPC is a warning); errors are odd.
  for (const name of SERVICES) {
    const lines = mesh
      .output(name)
      .split("\n")
      .filter((l) => /"level":"(error|fatal)"/.test(l));
    if (lines.length === 0) continue;
    warnings.push(`${name} logged errors (last ones above)`);
    say(`${name}'s last errors:`);
    for (const line of lines.slice(-5)) say(`  ${line.slice(0, 600)}`);
  }
  const problems = phases.flatMap((p) => p.problems.map((line) => `${p.name}: ${line}`));
  printProblems(say, "PROBLEMS DURING THE RUN: invariants broken or orders lost", problems);
  printWarnings(say, warnings);
  const resultsFile = await writeResults("flash", started, {
    settings,
    machineBusyBefore: busy,
    phases: phases.map(({ orders: _orders, ...rest }) => rest),
    problems,
    warnings,
  });
  say(`results: ${resultsFile}`);
  if (settings.cpuProf.length > 0)
    say(`profiles (once the mesh stops): ${relative(process.cwd(), profiles)}`);
  if (problems.length > 0) process.exitCode = 1;
}

async function connectServices(mesh: Mesh): Promise<Services> {
  const at = (name: string) =>
    createGrpcTransport({ baseUrl: `http://127.0.0.1:${mesh.ports(name).grpc}` });
  const identity = createClient(IdentityService, at("identity"));
  const admin = await identity.login(BENCH_ADMIN);
  return {
    identity,
    catalog: createClient(CatalogService, at("catalog")),
    inventory: createClient(InventoryService, at("inventory")),
    adminAuth: { headers: { authorization: `Bearer ${admin.accessToken}` } },
  };
}

/** The customers, each signed in and with its own connection to orders (warmed up). */
async function signUpCustomers(mesh: Mesh, services: Services): Promise<Customer[]> {
  const t = performance.now();
  const customers: Customer[] = [];
  const one = async (i: number) => {
    const email = `flash-${i}-${randomUUID().slice(0, 8)}@example.com`;
    const password = "correct horse battery staple";
    await services.identity.signUp({ email, password, displayName: `Flash ${i}` });
    const { accessToken } = await services.identity.login({ email, password });
    const orders = createOrdersClient(`127.0.0.1:${mesh.ports("orders").grpc}`, accessToken);
    cleanups.push(async () => orders.close());
    // Opens the connection now: the burst measures orders, not TCP and HTTP/2 set-up.
    await orders.connect();
    customers[i] = { orders };
  };
  // Password hashing is deliberately slow; a few at a time keeps the set-up short.
  for (let i = 0; i < settings.customers; i += 4) {
    await Promise.all(
      Array.from({ length: Math.min(4, settings.customers - i) }, (_, k) => one(i + k)),
    );
  }
  say(
    `${settings.customers} customers signed in in ${((performance.now() - t) / 1000).toFixed(1)} s`,
  );
  return customers;
}

/** `count` new products with `units` each; returns their ids. */
async function createSkus(
  services: Services,
  count: number,
  units: number,
  label: string,
): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < count; i++) {
    const sku = `FLASH-${label}-${i}-${randomUUID().slice(0, 6).toUpperCase()}`;
    const { product } = await services.catalog.createProduct(
      {
        requestId: randomUUID(),
        sku,
        name: `Flash item ${label} ${i}`,
        category: "bench",
        price: { currencyCode: "EUR", units: 19n, nanos: 990_000_000 },
      },
      services.adminAuth,
    );
    if (product === undefined) throw new Error("CreateProduct returned no product");
    await services.inventory.setStock(
      { productId: product.id, sku, onHand: BigInt(units) },
      services.adminAuth,
    );
    ids.push(product.id);
  }
  return ids;
}

/**
 * Places one order, then, unless PlaceOrder answered it terminal, follows it with
 * WatchOrder until it is (watching again if a stream ends early). `done` settles when the order is terminal or the phase gives up.
 */
async function placeAndWatch(
  customer: Customer,
  productId: string,
  sentAt: number,
  label: string,
  giveUpAt = Number.POSITIVE_INFINITY,
): Promise<{ order: Tracked; done: Promise<void> }> {
  const { order } = await customer.orders.placeOrder(
    { requestId: randomUUID(), items: [{ productId, quantity: 1 }], payment: { card: CARD } },
    settings.placeTimeoutMs,
  );
  const answeredAt = wallNow();
  if (order === undefined) throw new Error(`${label}: PlaceOrder returned no order`);
  const tracked: Tracked = { id: order.id, sku: productId, sentAt, answeredAt };
  // An order PlaceOrder answered terminal (out of stock) needs no watch: that answer is
  // when its customer learnt it.
  terminal(order, tracked);
  const done = (async () => {
    while (tracked.status === undefined && wallNow() < giveUpAt) {
      try {
        const timeoutMs = Math.min(120_000, Math.max(1_000, giveUpAt - wallNow()));
        for await (const { order: seen } of customer.orders.watchOrder(order.id, timeoutMs)) {
          if (seen !== undefined && terminal(seen, tracked)) break;
        }
      } catch (reason) {
        if (wallNow() >= giveUpAt) return;
        // A stream cut short (deadline, a busy server): watch again after a pause.
        if (!(reason instanceof CallError)) throw reason;
        await sleep(200);
      }
    }
  })();
  return { order: tracked, done };
}

/** Records a terminal state seen on the watch; whether it was terminal. */
function terminal(seen: Order, tracked: Tracked): boolean {
  if (seen.status !== OrderStatus.CONFIRMED && seen.status !== OrderStatus.CANCELLED) return false;
  tracked.seenAt = wallNow();
  const at = seen.updateTime;
  tracked.terminalAt =
    at === undefined ? tracked.seenAt : Number(at.seconds) * 1000 + at.nanos / 1_000_000;
  tracked.status = seen.status === OrderStatus.CONFIRMED ? "CONFIRMED" : "CANCELLED";
  if (seen.status === OrderStatus.CANCELLED) {
    tracked.cancelCode = CancelCode[seen.cancelCode] ?? String(seen.cancelCode);
  }
  return true;
}

interface PhaseContext {
  mesh: Mesh;
  services: Services;
  customers: Customer[];
  db: { cluster: Sql; inventory: Sql; orders: Sql };
  dbNames: { inventory: string; orders: string };
  pids: Map<string, number>;
}

interface PhaseResult {
  name: string;
  skus: number;
  /** Units for sale in the phase. */
  units: number;
  placed: number;
  sentOverMs: number;
  errors: Record<string, number>;
  placeOrderMs: Stats;
  confirmed: number;
  cancelled: number;
  cancelCodes: Record<string, number>;
  unsettled: number;
  lastSentToAllTerminalMs: number;
  lastAnsweredToAllTerminalMs: number;
  lastSentToAllSeenMs: number;
  requestToConfirmedMs: Stats;
  requestToCancelledMs: Stats;
  requestToConfirmedSeenMs: Stats;
  requestToCancelledSeenMs: Stats;
  /** From the terminal commit to its arrival on the WatchOrder stream. */
  watchDeliveryMs: Stats;
  sagaSteps: Record<string, number>;
  sagaRetries: number;
  /** Mean ms per RPC method (`server X` / `client X`) and store operation, by service. */
  timings: Record<string, Record<string, { count: number; meanMs: number }>>;
  /** Per order, ms from the burst's start: [sent, answered, terminal, 1 = CONFIRMED]. */
  timeline: number[][];
  reserveStockCodes: Record<string, number>;
  lockWaits: { inventory: LockWaits; orders: LockWaits };
  stock: {
    minAvailable: number;
    minOnHand: number;
    minReserved: number;
    final: { productId: string; onHand: number; reserved: number }[];
    reservationsLeft: number;
  };
  database: Record<string, number>;
  cpuCores: Record<string, number>;
  /** CPU ms each process spent over the phase, per order placed. */
  cpuMsPerOrder: Record<string, number>;
  othersCores: number;
  targets: Record<string, { target: string; value: number; met: boolean }>;
  problems: string[];
  orders: Tracked[];
}

async function runPhase(name: string, skuCount: number, ctx: PhaseContext): Promise<PhaseResult> {
  const { services, customers, db, dbNames, mesh } = ctx;
  const perSku = Math.floor(settings.stock / skuCount);
  const stockTotal = perSku * skuCount;
  if (perSku * skuCount !== settings.stock) {
    warnings.push(`${name}: ${settings.stock} units do not split evenly; ${stockTotal} for sale`);
  }
  const skus = await createSkus(services, skuCount, perSku, name.toUpperCase());
  say();
  say(
    `${name}: ${settings.orders} orders for ${skuCount} SKU${skuCount > 1 ? "s" : ""} × ${perSku} units, sent within ${settings.sendMs} ms…`,
  );

  const ordersAdmin = `http://127.0.0.1:${mesh.ports("orders").admin}/metrics`;
  const inventoryAdmin = `http://127.0.0.1:${mesh.ports("inventory").admin}/metrics`;
  const metricsBefore = {
    orders: await scrape(ordersAdmin),
    inventory: await scrape(inventoryAdmin),
  };

  // Samplers: backends waiting on locks in inventory's and orders' databases, and the
  // phase's stock rows as a client of inventory's database sees them.
  let sampling = true;
  const waits = { inventory: [] as number[], orders: [] as number[] };
  const waitSeconds = { inventory: 0, orders: 0 };
  const lows = {
    minAvailable: Number.POSITIVE_INFINITY,
    minOnHand: Number.POSITIVE_INFINITY,
    minReserved: Number.POSITIVE_INFINITY,
  };
  const lockSampler = (async () => {
    let last = performance.now();
    while (sampling) {
      const rows = await db.cluster<{ datname: string; waiting: bigint }[]>`
        select datname, count(*) filter (where wait_event_type = 'Lock') as waiting
        from pg_stat_activity
        where datname in (${dbNames.inventory}, ${dbNames.orders})
        group by datname`.catch(() => []);
      const now = performance.now();
      const dt = (now - last) / 1000;
      last = now;
      for (const key of ["inventory", "orders"] as const) {
        const n = Number(rows.find((r) => r.datname === dbNames[key])?.waiting ?? 0n);
        waits[key].push(n);
        waitSeconds[key] += n * dt;
      }
      await sleep(settings.sampleMs);
    }
  })();
  const stockSampler = (async () => {
    while (sampling) {
      const rows = await db.inventory<{ on_hand: bigint; reserved: bigint }[]>`
        select on_hand, reserved from stock_levels where product_id in ${db.inventory(skus)}`.catch(
        () => [],
      );
      for (const r of rows) {
        lows.minAvailable = Math.min(lows.minAvailable, Number(r.on_hand - r.reserved));
        lows.minOnHand = Math.min(lows.minOnHand, Number(r.on_hand));
        lows.minReserved = Math.min(lows.minReserved, Number(r.reserved));
      }
      await sleep(settings.sampleMs * 2);
    }
  })();
  const cpu = startMeshCpu(ctx.pids);

  // The burst: order i starts at i/N of the send window, whether or not earlier ones
  // were answered (customers do not wait for each other).
  const giveUpAt = wallNow() + settings.sendMs + settings.settleSeconds * 1000;
  const placing: Promise<{ order: Tracked; done: Promise<void> } | undefined>[] = [];
  const errors = new Map<string, number>();
  const sentTimes: number[] = [];
  const began = wallNow();
  let i = 0;
  while (i < settings.orders) {
    const due = Math.min(
      settings.orders,
      Math.floor(((wallNow() - began) / settings.sendMs) * settings.orders) + 1,
    );
    for (; i < due; i++) {
      const customer = customers[i % customers.length] as Customer;
      const sku = skus[i % skus.length] as string;
      const sentAt = wallNow();
      sentTimes.push(sentAt);
      placing.push(
        placeAndWatch(customer, sku, sentAt, name, giveUpAt).catch((reason: unknown) => {
          const code = reason instanceof CallError ? reason.code : "client";
          errors.set(code, (errors.get(code) ?? 0) + 1);
          if ([...errors.values()].reduce((a, b) => a + b, 0) === 1) {
            say(`  first PlaceOrder error: ${reason instanceof Error ? reason.message : reason}`);
          }
          return undefined;
        }),
      );
    }
    if (i < settings.orders) await sleep(2);
  }
  const lastSent = Math.max(...sentTimes);
  const placed = (await Promise.all(placing)).filter((p) => p !== undefined);
  const lastAnswered = Math.max(...placed.map((p) => p.order.answeredAt));
  say(
    `  sent over ${(lastSent - began).toFixed(0)} ms; last PlaceOrder answered ${((lastAnswered - lastSent) / 1000).toFixed(1)} s after the last was sent`,
  );
  await Promise.all(placed.map((p) => p.done));
  const used = cpu.stop();
  sampling = false;
  await Promise.all([lockSampler, stockSampler]);

  const orders = placed.map((p) => p.order);
  const done = orders.filter((o) => o.status !== undefined);
  const confirmed = orders.filter((o) => o.status === "CONFIRMED");
  const cancelled = orders.filter((o) => o.status === "CANCELLED");
  const unsettled = orders.length - done.length;
  const cancelCodes: Record<string, number> = {};
  for (const o of cancelled) {
    const code = o.cancelCode ?? "?";
    cancelCodes[code] = (cancelCodes[code] ?? 0) + 1;
  }
  const lastTerminal = Math.max(...done.map((o) => o.terminalAt ?? 0));
  const lastSeen = Math.max(...done.map((o) => o.seenAt ?? 0));
  const metricsAfter = {
    orders: await scrape(ordersAdmin),
    inventory: await scrape(inventoryAdmin),
  };
  const sagaSteps = deltaBy(
    metricsBefore.orders,
    metricsAfter.orders,
    "orders_saga_steps_total",
    (l) => `${l.step}:${l.transition}`,
  );
  const sagaRetries = Object.entries(sagaSteps)
    .filter(([k]) => k.endsWith(":retry"))
    .reduce((a, [, v]) => a + v, 0);
  const reserveStockCodes = deltaBy(
    metricsBefore.inventory,
    metricsAfter.inventory,
    "rpc_requests_total",
    (l) =>
      l.side === "server" && l.method?.endsWith("ReserveStock") ? (l.code ?? "?") : undefined,
  );
  // Where the time went: mean duration per RPC method and store operation, by service.
  const meanMs = (service: "orders" | "inventory") => {
    const of = (metric: string, keyOf: (l: Labels) => string | undefined) => {
      const sums = deltaBy(metricsBefore[service], metricsAfter[service], `${metric}_sum`, keyOf);
      const counts = deltaBy(
        metricsBefore[service],
        metricsAfter[service],
        `${metric}_count`,
        keyOf,
      );
      return Object.fromEntries(
        Object.entries(counts).map(([k, n]) => [
          k,
          { count: n, meanMs: ((sums[k] ?? 0) * 1000) / n },
        ]),
      );
    };
    return {
      ...of("rpc_request_duration_seconds", (l) => `${l.side} ${l.method}`),
      ...of("db_operation_duration_seconds", (l) => `store ${l.operation}`),
    };
  };
  const timings = { orders: meanMs("orders"), inventory: meanMs("inventory") };

  const finalStock = await db.inventory<
    { product_id: string; on_hand: bigint; reserved: bigint }[]
  >`
    select product_id, on_hand, reserved from stock_levels where product_id in ${db.inventory(skus)}
    order by product_id`;
  const ids = orders.map((o) => o.id);
  const [left] = await db.inventory<{ n: bigint }[]>`
    select count(*) as n from reservations
    where status = 'reserved' and order_id = any(${ids}::uuid[])`;
  const statusRows = await db.orders<{ status: string; n: bigint }[]>`
    select status, count(*) as n from orders where id = any(${ids}::uuid[])
    group by status order by status`;
  const database = Object.fromEntries(statusRows.map((r) => [r.status, Number(r.n)]));
  const [extra] = await db.orders<{ n: bigint }[]>`
    select count(*) as n from orders o
    join order_items i on i.order_id = o.id
    where i.product_id = any(${skus}::uuid[]) and not (o.id = any(${ids}::uuid[]))`;

  const problems: string[] = [];
  const errorCount = [...errors.values()].reduce((a, b) => a + b, 0);
  if (errorCount > 0) {
    problems.push(`PlaceOrder errors: ${[...errors].map(([c, k]) => `${k} × ${c}`).join(", ")}`);
  }
  if (unsettled > 0) {
    problems.push(`${unsettled} orders not terminal ${settings.settleSeconds} s after the burst`);
  }
  const expected = Math.min(stockTotal, orders.length);
  if (confirmed.length !== expected) {
    problems.push(`${confirmed.length} orders CONFIRMED, expected exactly ${expected}`);
  }
  const otherCodes = Object.keys(cancelCodes).filter((c) => c !== "OUT_OF_STOCK");
  if (otherCodes.length > 0) {
    problems.push(`orders cancelled for other reasons than stock: ${otherCodes.join(", ")}`);
  }
  if (lows.minAvailable < 0 || lows.minOnHand < 0 || lows.minReserved < 0) {
    problems.push(
      `stock went negative: available ${lows.minAvailable}, on hand ${lows.minOnHand}, reserved ${lows.minReserved}`,
    );
  }
  for (const row of finalStock) {
    const sold = confirmed.filter((o) => o.sku === row.product_id).length;
    if (row.reserved !== 0n || row.on_hand !== BigInt(perSku - sold)) {
      problems.push(
        `product ${row.product_id}: on hand ${row.on_hand}, reserved ${row.reserved}; expected ${perSku - sold} and 0 (${sold} sold)`,
      );
    }
  }
  if (Number(left?.n ?? 0n) > 0) problems.push(`${left?.n} reservations left RESERVED`);
  if ((database.CONFIRMED ?? 0) !== confirmed.length || (database.PENDING ?? 0) !== unsettled) {
    problems.push(`orders database disagrees with the watches: ${JSON.stringify(database)}`);
  }
  if (Number(extra?.n ?? 0n) > 0) {
    problems.push(`${extra?.n} orders for these SKUs that this run did not see placed`);
  }

  const place = stats(orders.map((o) => o.answeredAt - o.sentAt));
  const toConfirmed = stats(confirmed.map((o) => (o.terminalAt ?? 0) - o.sentAt));
  const toCancelled = stats(cancelled.map((o) => (o.terminalAt ?? 0) - o.sentAt));
  const allTerminal = unsettled === 0 ? lastTerminal - lastSent : Number.NaN;
  const targets = {
    allTerminalAfterLastPlaceOrderMs: {
      target: `<= ${TARGET_ALL_TERMINAL_MS}`,
      value: allTerminal,
      met: allTerminal <= TARGET_ALL_TERMINAL_MS,
    },
    placeOrderP99Ms: {
      target: `< ${TARGET_P99_PLACE_MS}`,
      value: place.p99,
      met: place.p99 < TARGET_P99_PLACE_MS,
    },
    cancelledBeforeConfirmedP50: {
      target: "CANCELLED p50 < CONFIRMED p50",
      value: toCancelled.p50 - toConfirmed.p50,
      met: toCancelled.p50 < toConfirmed.p50,
    },
  };
  if (used.othersCores > NOISE_CORES) {
    warnings.push(
      `${name}: other processes used ${used.othersCores.toFixed(2)} cores during the phase (other tests on the machine?)`,
    );
  }
  const summarize = (values: number[]): LockWaits => ({
    samples: values.length,
    samplesWaiting: values.filter((v) => v > 0).length,
    meanWaiting: mean(values),
    maxWaiting: values.length === 0 ? 0 : Math.max(...values),
    waiterSeconds: 0,
  });
  return {
    name,
    skus: skuCount,
    units: stockTotal,
    placed: orders.length,
    sentOverMs: lastSent - began,
    errors: Object.fromEntries(errors),
    placeOrderMs: place,
    confirmed: confirmed.length,
    cancelled: cancelled.length,
    cancelCodes,
    unsettled,
    lastSentToAllTerminalMs: allTerminal,
    lastAnsweredToAllTerminalMs: unsettled === 0 ? lastTerminal - lastAnswered : Number.NaN,
    lastSentToAllSeenMs: unsettled === 0 ? lastSeen - lastSent : Number.NaN,
    requestToConfirmedMs: toConfirmed,
    requestToCancelledMs: toCancelled,
    requestToConfirmedSeenMs: stats(confirmed.map((o) => (o.seenAt ?? 0) - o.sentAt)),
    requestToCancelledSeenMs: stats(cancelled.map((o) => (o.seenAt ?? 0) - o.sentAt)),
    watchDeliveryMs: stats(done.map((o) => (o.seenAt ?? 0) - (o.terminalAt ?? 0))),
    sagaSteps,
    sagaRetries,
    timings,
    timeline: orders.map((o) => [
      Math.round(o.sentAt - began),
      Math.round(o.answeredAt - began),
      Math.round((o.terminalAt ?? Number.NaN) - began),
      o.status === "CONFIRMED" ? 1 : 0,
    ]),
    reserveStockCodes,
    lockWaits: {
      inventory: { ...summarize(waits.inventory), waiterSeconds: waitSeconds.inventory },
      orders: { ...summarize(waits.orders), waiterSeconds: waitSeconds.orders },
    },
    stock: {
      ...lows,
      final: finalStock.map((r) => ({
        productId: r.product_id,
        onHand: Number(r.on_hand),
        reserved: Number(r.reserved),
      })),
      reservationsLeft: Number(left?.n ?? 0n),
    },
    database,
    cpuCores: used.cores,
    cpuMsPerOrder: Object.fromEntries(
      Object.entries(used.cores).map(([n, c]) => [
        n,
        (c * used.wallSeconds * 1000) / Math.max(1, orders.length),
      ]),
    ),
    othersCores: used.othersCores,
    targets,
    problems,
    orders,
  };
}

function printPhase(p: PhaseResult): void {
  const f = (v: number, d = 0) => (Number.isFinite(v) ? v.toFixed(d) : "-");
  const s = (ms: number) => (Number.isFinite(ms) ? `${(ms / 1000).toFixed(2)} s` : "-");
  const pair = (st: Stats) => `${f(st.p50)} / ${f(st.p99)}`;
  const met = (ok: boolean) => (ok ? "MET" : "NOT MET");
  say(
    `== ${p.name}: ${p.placed} orders for ${p.skus} SKU${p.skus > 1 ? "s" : ""}, ${p.units} units (sent over ${f(p.sentOverMs)} ms)`,
  );
  const row = (label: string, value: string, note = "") =>
    say(`  ${label.padEnd(44)}${value.padStart(16)}   ${note}`);
  row(
    "last PlaceOrder sent -> all terminal",
    s(p.lastSentToAllTerminalMs),
    `<= ${TARGET_ALL_TERMINAL_MS / 1000} s  ${met(p.targets.allTerminalAfterLastPlaceOrderMs?.met === true)}`,
  );
  row("last PlaceOrder answered -> all terminal", s(p.lastAnsweredToAllTerminalMs));
  row("last PlaceOrder sent -> all seen", s(p.lastSentToAllSeenMs));
  row(
    "confirmed / cancelled / not terminal",
    `${p.confirmed} / ${p.cancelled} / ${p.unsettled}`,
    `confirmed must be ${Math.min(p.units, p.placed)}  ${met(p.confirmed === Math.min(p.units, p.placed))}`,
  );
  row(
    "PlaceOrder p50 / p99 ms",
    pair(p.placeOrderMs),
    `p99 < ${TARGET_P99_PLACE_MS}  ${met(p.targets.placeOrderP99Ms?.met === true)}`,
  );
  row("request -> CONFIRMED p50 / p99 ms", pair(p.requestToConfirmedMs), "(committed)");
  row(
    "request -> CANCELLED p50 / p99 ms",
    pair(p.requestToCancelledMs),
    `p50 below CONFIRMED's  ${met(p.targets.cancelledBeforeConfirmedP50?.met === true)}`,
  );
  row("request -> CONFIRMED seen p50 / p99 ms", pair(p.requestToConfirmedSeenMs), "(client)");
  row("request -> CANCELLED seen p50 / p99 ms", pair(p.requestToCancelledSeenMs), "(client)");
  row(
    "commit -> seen p50 / p99 / max ms",
    `${pair(p.watchDeliveryMs)} / ${f(p.watchDeliveryMs.max)}`,
  );
  row("saga retries", String(p.sagaRetries), retryNote(p.sagaSteps));
  row(
    "inventory lock waits: samples / max / s",
    `${p.lockWaits.inventory.samplesWaiting}/${p.lockWaits.inventory.samples} / ${p.lockWaits.inventory.maxWaiting} / ${f(p.lockWaits.inventory.waiterSeconds, 2)}`,
    "(pg_stat_activity wait_event_type Lock)",
  );
  row(
    "orders lock waits: samples / max / s",
    `${p.lockWaits.orders.samplesWaiting}/${p.lockWaits.orders.samples} / ${p.lockWaits.orders.maxWaiting} / ${f(p.lockWaits.orders.waiterSeconds, 2)}`,
  );
  row(
    "ReserveStock answers",
    String(Object.values(p.reserveStockCodes).reduce((a, b) => a + b, 0)),
    Object.entries(p.reserveStockCodes)
      .map(([c, n]) => `${n} ${c}`)
      .join(", "),
  );
  row(
    "stock lowest available / final reserved",
    `${f(p.stock.minAvailable)} / ${p.stock.final.reduce((a, r) => a + r.reserved, 0)}`,
    `reservations left RESERVED: ${p.stock.reservationsLeft}`,
  );
  if (p.cancelled > 0) {
    row(
      "cancel codes",
      "",
      Object.entries(p.cancelCodes)
        .map(([c, n]) => `${n} ${c}`)
        .join(", "),
    );
  }
  const prefix: Record<string, string> = { server: "in:", client: "out:", store: "db:" };
  for (const [service, ops] of Object.entries(p.timings)) {
    const busiest = Object.entries(ops)
      .filter(([, t]) => t.count >= p.placed / 10)
      .map(([op, t]) => {
        const [side = "", name = ""] = op.split(" ");
        return `${prefix[side] ?? side}${name} ${t.meanMs.toFixed(0)}`;
      });
    say(`  ${service} mean ms: ${busiest.join(", ")}`);
  }
  const cores = Object.entries(p.cpuCores)
    .map(([n, c]) => `${n} ${c.toFixed(2)}`)
    .join(", ");
  say(`  CPU over the phase, cores: ${cores}, others ${p.othersCores.toFixed(2)}`);
  const perOrder = Object.entries(p.cpuMsPerOrder)
    .filter(([, ms]) => ms >= 0.05)
    .map(([n, ms]) => `${n} ${ms.toFixed(2)}`)
    .join(", ");
  say(`  CPU ms per order placed: ${perOrder}`);
  say();
}

function retryNote(steps: Record<string, number>): string {
  const parts = Object.entries(steps)
    .filter(([k, v]) => k.endsWith(":retry") && v > 0)
    .map(([k, v]) => `${k.replace(":retry", "")} ${v}`);
  return parts.length === 0 ? "" : `(${parts.join(", ")})`;
}

type Labels = Record<string, string>;

/** The admin /metrics as samples with their labels. */
async function scrape(url: string): Promise<{ name: string; labels: Labels; value: number }[]> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5_000) });
  const text = await res.text();
  const out: { name: string; labels: Labels; value: number }[] = [];
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (m?.[1] === undefined || m[3] === undefined) continue;
    const labels: Labels = {};
    for (const pair of (m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      if (pair[1] !== undefined) labels[pair[1]] = pair[2] ?? "";
    }
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

/** How much `name` grew between two scrapes, summed by the key `keyOf` gives (undefined skips). */
function deltaBy(
  before: Awaited<ReturnType<typeof scrape>>,
  after: Awaited<ReturnType<typeof scrape>>,
  name: string,
  keyOf: (labels: Labels) => string | undefined,
): Record<string, number> {
  const sum = (samples: typeof before) => {
    const out = new Map<string, number>();
    for (const s of samples) {
      if (s.name !== name) continue;
      const key = keyOf(s.labels);
      if (key !== undefined) out.set(key, (out.get(key) ?? 0) + s.value);
    }
    return out;
  };
  const a = sum(before);
  const out: Record<string, number> = {};
  for (const [key, value] of sum(after)) {
    const d = value - (a.get(key) ?? 0);
    if (d !== 0) out[key] = d;
  }
  return out;
}

async function cleanup(): Promise<void> {
  for (const c of cleanups.reverse()) await c().catch(() => {});
  cleanups.length = 0;
}

await runBenchmark(main, cleanup);
