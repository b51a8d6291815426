import { randomUUID } from "node:crypto";
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createEventNames, createLogger, createPostgres, type Sql } from "@meshmart/kit";
import { CatalogService } from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_service_pb.js";
import { IdentityService } from "@meshmart/kit/gen/meshmart/identity/v1/identity_service_pb.js";
import { InventoryService } from "@meshmart/kit/gen/meshmart/inventory/v1/inventory_service_pb.js";
import { CancelCode, OrderStatus } from "@meshmart/kit/gen/meshmart/orders/v1/orders_pb.js";
import { OrderService } from "@meshmart/kit/gen/meshmart/orders/v1/orders_service_pb.js";
import {
  type OwnedNats,
  type OwnedPostgres,
  openTestEvents,
  startOwnedNats,
  startOwnedPostgres,
  testRedisUrl,
} from "@meshmart/kit/testing";
import { createPaymentsStore } from "@meshmart/payments/store";
import { type Mesh, startMesh } from "../support/mesh.js";

/** How big and how rough a chaos run is. */
export interface ChaosOptions {
  orders: number;
  /** Orders placed at once. */
  concurrency: number;
  /** Faults keep coming at least this long, and as long as orders are being placed. */
  minChaosMs: number;
  /** After the chaos: how long every order has to reach CONFIRMED or CANCELLED. */
  settleMs: number;
  log: (line: string) => void;
  /** Through the Envoy sidecar mesh (default: MESH=1), with two replicas of orders' callees. */
  sidecars?: boolean;
}

/** What a chaos run did and found. */
export interface ChaosReport {
  counts: Record<string, number>;
  /**
   * How many orders ended by each path: confirmed, declined (at authorization),
   * out_of_stock, capture_failed (authorized, capture declined), customer_cancelled (by
   * CancelOrder mid-saga; of them customer_voided and customer_refunded were cancelled
   * after the authorization), other.
   */
  paths: Record<string, number>;
  faults: string[];
  /** Broken invariants; empty when the system held. */
  violations: string[];
  /** Dead-lettered events, each with its reason. */
  deadLetters: string[];
  /** With MESH=1: what the sidecars did (retries, ejections, denials), summed over all. */
  mesh?: Record<string, number>;
}

const SERVICES = ["identity", "catalog", "inventory", "payments", "orders", "notifications"];
/** Through the sidecar mesh (MESH=1), orders' callees run twice, so retries and ejection have somewhere to go. */
const MESH_REPLICAS = { catalog: 2, inventory: 2, payments: 2 };
const TARGETS = [
  "orders",
  "inventory",
  "payments",
  "nats",
  "catalog",
  "postgres",
  "notifications",
  "identity",
];
/** The fake PSP's test card that authorizes but whose capture is declined. */
const CAPTURE_DECLINED_CARD = "4000000000000341";
/** The fake PSP's card that authorizes and captures: only the customer's cancel ends it early. */
const GOOD_CARD = "4242424242424242";
const CARDS = [
  { number: GOOD_CARD, weight: 60 },
  { number: "4000000000000002", weight: 10 },
  { number: "4000000000009995", weight: 10 },
  // Compensation after a successful authorization: release, then void.
  { number: CAPTURE_DECLINED_CARD, weight: 20 },
];
/**
 * Every fifth order's customer calls CancelOrder while the saga runs. Chosen by the order's
 * number, not by chance: the paths the run must show cannot depend on a lucky draw.
 */
const CANCELS_EVERY = 5;
/** The saga's cancel_reason of a capture the processor declined. */
const CAPTURE_DECLINED_REASON = /^payment declined at capture/;
const ADMIN = { email: "chaos-admin@example.com", password: "chaos admin password" };
const PRODUCTS = 5;

/**
 * Drives orders through the whole mesh (separate processes, its own Postgres and NATS)
 * while killing -9 and restarting each service, restarting NATS and restarting Postgres,
 * then checks the store's invariants.
 */
export async function runChaos(options: ChaosOptions): Promise<ChaosReport> {
  const { log } = options;
  // Every child is unref'd; this keeps the run alive while it only awaits them.
  const keepAlive = setInterval(() => {}, 1_000);
  const pg = await startOwnedPostgres({});
  let nats: OwnedNats | undefined;
  let mesh: Mesh | undefined;
  try {
    nats = await startOwnedNats();
    const infra = { postgresUrl: pg.url, redisUrl: await testRedisUrl(), natsUrl: nats.url };
    log(`chaos: postgres ${pg.url.replace(/\/\/[^@]*@/, "//")}, nats ${nats.url}`);
    mesh = await startMesh({
      label: "chaos",
      infra,
      services: SERVICES,
      replicas: MESH_REPLICAS,
      ...(options.sidecars === undefined ? {} : { sidecars: options.sidecars }),
      env: { SEED_DEMO: "false", CONSUMER_MAX_DELIVER: "10" },
      serviceEnv: {
        identity: {
          IDENTITY_BOOTSTRAP_ADMIN_EMAIL: ADMIN.email,
          IDENTITY_BOOTSTRAP_ADMIN_PASSWORD: ADMIN.password,
          ACCESS_TOKEN_TTL_S: "7200",
        },
        orders: { SAGA_STEP_TIMEOUT_MS: "3000", SAGA_LEASE_MS: "5000", SAGA_RETRY_MAX_MS: "2000" },
        inventory: { INITIAL_STOCK_ON_PRODUCT_CREATED: "0" },
        // A processor that takes a moment, as real ones do: kills land mid-call, and a
        // customer who cancels on seeing the authorization meets the capture in flight
        // (a void or a refund) rather than a stock already committed.
        payments: { FAKE_PSP_LATENCY_MS: "100" },
      },
    });
    log("chaos: mesh up");
    const setup = await prepareStore(mesh, options.orders);
    const report = await drive(mesh, pg, nats, setup, options);
    return report;
  } finally {
    // Drops the databases and the namespace's streams while Postgres and NATS still run.
    await mesh?.stop();
    await nats?.dispose();
    await pg.dispose();
    clearInterval(keepAlive);
  }
}

interface Store {
  products: { id: string; sku: string; unitMinor: bigint; stock: bigint }[];
  tokens: string[];
}

function clients(mesh: Mesh) {
  const at = (name: string) =>
    createGrpcTransport({ baseUrl: `http://127.0.0.1:${mesh.ports(name).grpc}` });
  return {
    identity: createClient(IdentityService, at("identity")),
    catalog: createClient(CatalogService, at("catalog")),
    inventory: createClient(InventoryService, at("inventory")),
    orders: createClient(OrderService, at("orders")),
  };
}

/** Products with limited stock (so some orders run out) and a few customers. */
async function prepareStore(mesh: Mesh, orders: number): Promise<Store> {
  const c = clients(mesh);
  const admin = await c.identity.login(ADMIN);
  const auth = { headers: { authorization: `Bearer ${admin.accessToken}` } };
  // About 2.4 units per order (see placeOne) over PRODUCTS products; stock covers about
  // half of it, a little less than the orders that pay and are not cancelled want, so the
  // last ones run out of stock.
  const stock = BigInt(Math.max(5, Math.ceil(((orders * 3) / PRODUCTS) * 0.42)));
  const products: Store["products"] = [];
  for (let i = 0; i < PRODUCTS; i++) {
    const sku = `CHAOS-${i}-${randomUUID().slice(0, 6).toUpperCase()}`;
    const units = BigInt(5 + i);
    const { product } = await c.catalog.createProduct(
      {
        requestId: randomUUID(),
        sku,
        name: `Chaos item ${i}`,
        category: "chaos",
        price: { currencyCode: "EUR", units, nanos: 250_000_000 },
      },
      auth,
    );
    if (product === undefined) throw new Error("CreateProduct returned no product");
    await c.inventory.setStock({ productId: product.id, sku, onHand: stock }, auth);
    products.push({ id: product.id, sku, unitMinor: units * 100n + 25n, stock });
  }
  const tokens: string[] = [];
  for (let i = 0; i < 8; i++) {
    const email = `chaos-${i}-${randomUUID().slice(0, 8)}@example.com`;
    const password = "correct horse battery staple";
    await c.identity.signUp({ email, password, displayName: `Chaos ${i}` });
    tokens.push((await c.identity.login({ email, password })).accessToken);
  }
  return { products, tokens };
}

/** The n-th order's card: by the weights, spread over the run, the same every run. */
function pickCard(n: number): string {
  let roll = (n * 37) % 100;
  for (const card of CARDS) {
    roll -= card.weight;
    if (roll < 0) return card.number;
  }
  return CARDS[0]?.number ?? "";
}

async function drive(
  mesh: Mesh,
  pg: OwnedPostgres,
  nats: OwnedNats,
  store: Store,
  options: ChaosOptions,
): Promise<ChaosReport> {
  const { log } = options;
  const faults: string[] = [];
  const unexpectedExits: string[] = [];
  let placing = true;
  const began = Date.now();

  const chaos = (async () => {
    let i = 0;
    // Until orders stop, the minimum time has passed, and every kind of fault has happened.
    // Through the mesh, every replica is a target of its own (`catalog-1`, …).
    const targets = TARGETS.flatMap((t) => (SERVICES.includes(t) ? mesh.processes(t) : [t]));
    while (placing || Date.now() - began < options.minChaosMs || i < targets.length) {
      const target = targets[i % targets.length] ?? "orders";
      i += 1;
      const downMs = 300 + Math.floor(Math.random() * 700);
      const t0 = Date.now();
      try {
        if (target === "nats") {
          await nats.kill();
          await sleep(downMs);
          await retrying(() => nats.start());
        } else if (target === "postgres") {
          await pg.stop();
          await sleep(downMs);
          await retrying(() => pg.start());
        } else {
          await mesh.kill(target);
          await sleep(downMs);
          await retrying(() => mesh.start(target));
        }
        faults.push(`${target} (${Date.now() - t0} ms)`);
      } catch (reason) {
        const why = reason instanceof Error ? reason.message : String(reason);
        faults.push(`${target} FAILED`);
        log(`chaos: ${target} did not come back: ${why.slice(0, 2_000)}`);
        unexpectedExits.push(`${target} did not come back: ${why.slice(0, 2_000)}`);
      }
      // A process the fault did not target must survive it (Postgres and NATS outages included).
      for (const name of SERVICES.flatMap((s) => mesh.processes(s))) {
        if (!mesh.isRunning(name)) {
          unexpectedExits.push(`${name} exited during the ${target} fault`);
          log(`chaos: ${name} exited unexpectedly; its last output:\n${mesh.output(name)}`);
          await mesh.start(name).catch(() => {});
        }
      }
      await sleep(400);
    }
  })();

  const c = clients(mesh);
  const placed: PlacedOrder[] = [];
  let rejectedRetries = 0;
  let next = 0;
  // Orders are spread over most of the chaos window, so faults land mid-flow.
  const spacingMs = (options.minChaosMs * 0.8) / options.orders;
  const worker = async () => {
    for (;;) {
      const n = next++;
      if (n >= options.orders) return;
      await sleep(began + n * spacingMs - Date.now());
      // Some customers change their mind while the saga runs, not waiting for the answer:
      // half at once, half once the order shows its authorized payment. They pay with a
      // card that goes through, so a decline cannot end the order before they ask.
      const cancels = n % CANCELS_EVERY === 1;
      const card = cancels ? GOOD_CARD : pickCard(n);
      const order = await placeOne(c.orders, store, n, card, () => {
        rejectedRetries += 1;
      });
      if (order === undefined) continue;
      placed.push(order);
      if (cancels) {
        const afterAuthorization = Math.floor(n / CANCELS_EVERY) % 2 === 1;
        order.cancel = cancelOne(c.orders, order, afterAuthorization);
      }
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, worker));
  placing = false;
  log(
    `chaos: ${placed.length} orders placed in ${((Date.now() - began) / 1000).toFixed(1)} s; faults continue`,
  );
  const cancels = new Map<string, CancelOutcome>();
  await Promise.all(
    placed.map(async (o) => {
      if (o.cancel !== undefined) cancels.set(o.id, await o.cancel);
    }),
  );
  await chaos;
  log(`chaos: ${faults.length} faults: ${faults.join(", ")}`);

  // Everything back up, then the invariants.
  for (const name of SERVICES.flatMap((s) => mesh.processes(s))) {
    await mesh.start(name).catch(() => {});
  }
  const verifier = await openVerifier(mesh);
  try {
    const settleBegan = Date.now();
    const pending = await waitUntil(options.settleMs, async () => verifier.pendingOrders());
    const settledIn = Date.now() - settleBegan;
    const terminal = await verifier.terminalOrders();
    const notified = await waitUntil(30_000, async () => {
      const missing = await verifier.ordersWithoutNotification(terminal);
      return missing;
    });
    const violations: string[] = [...unexpectedExits];
    if (pending > 0)
      violations.push(`${pending} orders still PENDING ${options.settleMs} ms after the chaos`);
    if (placed.length !== options.orders) {
      violations.push(`${options.orders - placed.length} orders could not be placed at all`);
    }
    violations.push(...(await verifier.stockViolations(store)));
    violations.push(...(await verifier.paymentViolations(terminal)));
    const paymentsByOrder = await verifier.paymentsByOrder();
    const { paths, problems } = classify(placed, terminal, paymentsByOrder, cancels);
    violations.push(...problems);
    if (notified > 0) violations.push(`${notified} terminal orders without their notification`);
    violations.push(...(await verifier.duplicateNotifications()));
    const deadLetters = await verifier.deadLetters();
    const confirmed = terminal.filter((o) => o.status === "CONFIRMED").length;
    const byCode = new Map<string, number>();
    for (const o of terminal) {
      if (o.status === "CANCELLED") byCode.set(o.cancel_code, (byCode.get(o.cancel_code) ?? 0) + 1);
    }
    const cancelOutcomes = [...cancels.values()];
    return {
      paths,
      counts: {
        placed: placed.length,
        confirmed,
        cancelled: terminal.length - confirmed,
        ...Object.fromEntries([...byCode].map(([k, v]) => [`cancelled_${k.toLowerCase()}`, v])),
        pending,
        faults: faults.length,
        placeRetries: rejectedRetries,
        cancelRequests: cancels.size,
        cancelAccepted: cancelOutcomes.filter((o) => o === "cancelled").length,
        cancelTooLate: cancelOutcomes.filter((o) => o === "too_late").length,
        cancelGaveUp: cancelOutcomes.filter((o) => o === "gave_up").length,
        settledMs: settledIn,
        notifications: await verifier.notificationCount(),
        deadLetters: deadLetters.length,
      },
      faults,
      violations,
      deadLetters,
      ...(mesh.sidecars === undefined ? {} : { mesh: await sidecarTotals(mesh) }),
    };
  } finally {
    await verifier.close();
  }
}

/** An order the run placed, with its card and, if its customer cancels, how that went. */
interface PlacedOrder {
  id: string;
  card: string;
  token: string;
  cancel?: Promise<CancelOutcome>;
}

/**
 * What the customer's CancelOrder answered: the order cancelled at its request, too late
 * (FAILED_PRECONDITION: confirmed, or the stock committed), already cancelled for another
 * reason, or no answer within its time.
 */
type CancelOutcome = "cancelled" | "too_late" | "already_cancelled" | "gave_up";

/** PlaceOrder with retries on any failure, same request_id: idempotency makes it safe. */
async function placeOne(
  orders: Client<typeof OrderService>,
  store: Store,
  n: number,
  card: string,
  onRetry: () => void,
): Promise<PlacedOrder | undefined> {
  const requestId = randomUUID();
  const token = store.tokens[n % store.tokens.length] ?? "";
  const first = store.products[n % store.products.length];
  const second = store.products[(n * 7 + 3) % store.products.length];
  const items = [{ productId: first?.id ?? "", quantity: 1 + (n % 3) }];
  if (second !== undefined && second !== first && n % 2 === 0) {
    items.push({ productId: second.id, quantity: 1 });
  }
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      const { order } = await orders.placeOrder(
        {
          requestId,
          items,
          payment: { card: { number: card, expMonth: 12, expYear: 2030, cvc: "123" } },
        },
        { headers: { authorization: `Bearer ${token}` }, timeoutMs: 5_000 },
      );
      return order === undefined ? undefined : { id: order.id, card, token };
    } catch (reason) {
      if (Date.now() > deadline) return undefined;
      const code = reason instanceof ConnectError ? reason.code : undefined;
      if (code === 3) return undefined; // INVALID_ARGUMENT: a bug in this driver, not chaos.
      onRetry();
      await sleep(200);
    }
  }
}

/**
 * CancelOrder as an impatient customer sends it: within moments of placing it, or once
 * GetOrder shows the order's payment, i.e. after the authorization, when only a void or a
 * refund can undo it. Retried while orders is down or the
 * compensation is still under way (the same request is idempotent).
 */
async function cancelOne(
  orders: Client<typeof OrderService>,
  order: PlacedOrder,
  afterAuthorization: boolean,
): Promise<CancelOutcome> {
  const options = { headers: { authorization: `Bearer ${order.token}` }, timeoutMs: 5_000 };
  if (afterAuthorization) {
    const until = Date.now() + 10_000;
    while (Date.now() < until) {
      const seen = await orders.getOrder({ orderId: order.id }, options).then(
        (r) => r.order,
        () => undefined,
      );
      if (seen !== undefined && (seen.paymentId !== "" || seen.status !== OrderStatus.PENDING)) {
        break;
      }
      await sleep(15);
    }
  } else {
    await sleep(Math.random() * 50);
  }
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      const { order: answer } = await orders.cancelOrder(
        { orderId: order.id, reason: "chaos customer" },
        options,
      );
      return answer?.cancelCode === CancelCode.CUSTOMER_REQUESTED
        ? "cancelled"
        : "already_cancelled";
    } catch (reason) {
      if (ConnectError.from(reason).code === Code.FailedPrecondition) return "too_late";
      if (Date.now() > deadline) return "gave_up";
      await sleep(200);
    }
  }
}

/** A payment of an order, as payments stores it. */
interface OrderPayment {
  status: string;
  captured_minor: bigint;
}

/**
 * Sorts the terminal orders by the path they took and checks what each path promises
 * beyond the ledger-wide checks: a capture-declined card is never charged and its hold is
 * voided; no cancelled order keeps a hold; what CancelOrder answered is how the order ended.
 */
function classify(
  placed: readonly PlacedOrder[],
  terminal: readonly TerminalOrder[],
  paymentsByOrder: ReadonlyMap<string, OrderPayment[]>,
  cancels: ReadonlyMap<string, CancelOutcome>,
): { paths: Record<string, number>; problems: string[] } {
  const paths: Record<string, number> = {
    confirmed: 0,
    declined: 0,
    out_of_stock: 0,
    capture_failed: 0,
    customer_cancelled: 0,
    customer_voided: 0,
    customer_refunded: 0,
    other: 0,
  };
  const count = (path: string) => {
    paths[path] = (paths[path] ?? 0) + 1;
  };
  const problems: string[] = [];
  const cards = new Map(placed.map((o) => [o.id, o.card]));
  for (const o of terminal) {
    const pays = paymentsByOrder.get(o.id) ?? [];
    const statuses = pays.map((p) => p.status).join(",");
    const captureDeclinedCard = cards.get(o.id) === CAPTURE_DECLINED_CARD;
    if (o.status === "CONFIRMED") count("confirmed");
    else if (o.cancel_code === "OUT_OF_STOCK") count("out_of_stock");
    else if (o.cancel_code === "CUSTOMER_REQUESTED") {
      count("customer_cancelled");
      if (pays.some((p) => p.status === "refunded")) count("customer_refunded");
      else if (pays.some((p) => p.status === "voided")) count("customer_voided");
    } else if (o.cancel_code === "PAYMENT_DECLINED") {
      if (CAPTURE_DECLINED_REASON.test(o.cancel_reason)) {
        count("capture_failed");
        if (statuses !== "voided") {
          problems.push(`capture-failed ${o.id}: payments [${statuses}] instead of one voided`);
        }
      } else count("declined");
    } else count("other");

    if (o.status === "CANCELLED" && pays.some((p) => p.status === "authorized")) {
      problems.push(`cancelled ${o.id}: its authorization is still open [${statuses}]`);
    }
    if (captureDeclinedCard) {
      if (o.status === "CONFIRMED") {
        problems.push(`${o.id}: confirmed on the capture-declined card`);
      }
      if (pays.some((p) => p.captured_minor !== 0n)) {
        problems.push(`${o.id}: captured on the capture-declined card [${statuses}]`);
      }
    }
    const cancel = cancels.get(o.id);
    const byCustomer = o.status === "CANCELLED" && o.cancel_code === "CUSTOMER_REQUESTED";
    if (cancel === "cancelled" && !byCustomer) {
      problems.push(`${o.id}: CancelOrder answered cancelled, the order ended ${o.status}`);
    }
    if (cancel === "too_late" && o.status !== "CONFIRMED") {
      problems.push(`${o.id}: CancelOrder answered too late, the order ended ${o.status}`);
    }
    if (cancel === undefined && byCustomer) {
      problems.push(`${o.id}: cancelled by a customer who never asked`);
    }
  }
  return { paths, problems };
}

interface TerminalOrder {
  id: string;
  status: string;
  cancel_code: string;
  cancel_reason: string;
  total_minor: bigint;
}

async function openVerifier(mesh: Mesh) {
  const logger = createLogger({ service: "chaos", level: "silent" });
  const open = (name: string): Sql =>
    createPostgres({ url: mesh.databaseUrl(name), service: "chaos", logger, max: 2 });
  const orders = open("orders");
  const inventory = open("inventory");
  const paymentsSql = open("payments");
  const notifications = open("notifications");
  const payments = createPaymentsStore(paymentsSql, createEventNames(mesh.namespace));
  return {
    async pendingOrders(): Promise<number> {
      const [row] = await orders<
        { n: bigint }[]
      >`select count(*) as n from orders where status = 'PENDING'`;
      return Number(row?.n ?? 0n);
    },
    async terminalOrders(): Promise<TerminalOrder[]> {
      // EUR: 2 decimals.
      return orders<TerminalOrder[]>`
        select id::text, status, cancel_code, cancel_reason,
               total_units * 100 + total_nanos / 10000000 as total_minor
        from orders where status <> 'PENDING'`;
    },
    async stockViolations(store: Store): Promise<string[]> {
      const problems: string[] = [];
      const sold = new Map(
        (
          await orders<{ product_id: string; sold: bigint }[]>`
            select i.product_id::text, sum(i.quantity)::bigint as sold
            from order_items i join orders o on o.id = i.order_id
            where o.status = 'CONFIRMED' group by i.product_id`
        ).map((r) => [r.product_id, r.sold]),
      );
      for (const p of store.products) {
        const [row] = await inventory<{ on_hand: bigint; reserved: bigint }[]>`
          select on_hand, reserved from stock_levels where product_id = ${p.id}`;
        const s = sold.get(p.id) ?? 0n;
        if (row === undefined) problems.push(`${p.sku}: no stock record`);
        else {
          if (row.on_hand + s !== p.stock) {
            problems.push(
              `${p.sku}: stock not conserved: ${p.stock} = ${row.on_hand} on hand + ${s} sold?`,
            );
          }
          if (row.reserved !== 0n) problems.push(`${p.sku}: ${row.reserved} units still reserved`);
        }
      }
      const [held] = await inventory<{ n: bigint }[]>`
        select count(*) as n from reservations where status = 'reserved'`;
      if ((held?.n ?? 0n) > 0n) problems.push(`${held?.n} reservations still held`);
      return problems;
    },
    async paymentViolations(terminal: TerminalOrder[]): Promise<string[]> {
      const problems: string[] = [];
      const net = new Map((await payments.netCapturedByOrder()).map((n) => [n.order_id, n]));
      for (const o of terminal) {
        const n = net.get(o.id);
        if (o.status === "CONFIRMED") {
          if (
            n === undefined ||
            n.captured_minor !== o.total_minor ||
            n.net_minor !== o.total_minor
          ) {
            problems.push(
              `confirmed ${o.id}: total ${o.total_minor}, captured ${n?.captured_minor ?? 0n}, net ${n?.net_minor ?? 0n}`,
            );
          }
        } else if ((n?.net_minor ?? 0n) !== 0n) {
          problems.push(`cancelled ${o.id}: nets ${n?.net_minor} instead of 0`);
        }
      }
      const imbalances = await payments.ledgerImbalances();
      if (imbalances.length > 0)
        problems.push(`${imbalances.length} unbalanced ledger transactions`);
      return problems;
    },
    async paymentsByOrder(): Promise<Map<string, OrderPayment[]>> {
      const rows = await paymentsSql<(OrderPayment & { order_id: string })[]>`
        select order_id::text, status, captured_minor from payments order by created_at`;
      const byOrder = new Map<string, OrderPayment[]>();
      for (const { order_id, ...payment } of rows) {
        byOrder.set(order_id, [...(byOrder.get(order_id) ?? []), payment]);
      }
      return byOrder;
    },
    async ordersWithoutNotification(terminal: TerminalOrder[]): Promise<number> {
      const rows = await notifications<{ order_id: string }[]>`
        select distinct order_id::text from notifications where order_id is not null`;
      const have = new Set(rows.map((r) => r.order_id));
      return terminal.filter((o) => !have.has(o.id)).length;
    },
    async duplicateNotifications(): Promise<string[]> {
      const rows = await notifications<{ order_id: string; n: bigint }[]>`
        select order_id::text, count(*) as n from notifications
        where order_id is not null group by order_id having count(*) > 1`;
      return rows.map((r) => `order ${r.order_id}: ${r.n} notifications`);
    },
    async notificationCount(): Promise<number> {
      const [row] = await notifications<{ n: bigint }[]>`
        select count(*) as n from notifications where order_id is not null`;
      return Number(row?.n ?? 0n);
    },
    async deadLetters(): Promise<string[]> {
      const events = await openTestEvents("chaos", {
        natsUrl: mesh.infra.natsUrl,
        namespace: mesh.namespace,
      });
      try {
        const messages = await events.read(events.names.deadLetterStream).catch(() => []);
        return messages.map(
          (m) => `${m.subject}: ${m.header?.get("Meshmart-Dead-Letter-Reason") ?? "(no reason)"}`,
        );
      } finally {
        // Only the connection: the mesh's stop() deletes the streams.
        await events.nc.close();
      }
    },
    async close() {
      await Promise.all(
        [orders, inventory, paymentsSql, notifications].map((s) => s.end({ timeout: 1 })),
      );
    },
  };
}

/** Tries `start` up to 3 times: a restart may race the previous instance's last breath. */
async function retrying(start: () => Promise<void>): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await start();
    } catch (reason) {
      if (attempt >= 3) throw reason;
      await sleep(1_000);
    }
  }
}

/** Polls `count` until it is 0 or `timeoutMs` passes; returns the last count. */
async function waitUntil(timeoutMs: number, count: () => Promise<number>): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const n = await count().catch(() => Number.POSITIVE_INFINITY);
    if (n === 0 || Date.now() > deadline) return n;
    await sleep(250);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}

/** Retries, ejections, mTLS handshakes and RBAC denials, summed over every sidecar. */
async function sidecarTotals(mesh: Mesh): Promise<Record<string, number>> {
  const totals: Record<string, number> = {
    sidecars: 0,
    retries: 0,
    ejections: 0,
    handshakes: 0,
    rbacDenied: 0,
    upstreamRequests: 0,
  };
  const sum = (text: string, pattern: RegExp) =>
    text
      .split("\n")
      .filter((l) => pattern.test(l))
      .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
  for (const instance of mesh.sidecars?.layout.instances ?? []) {
    const running = mesh.sidecars?.sidecar(instance.process);
    if (running === undefined) continue;
    const text = await (await fetch(`${running.envoy.adminUrl}/stats`)).text();
    totals.sidecars = (totals.sidecars ?? 0) + 1;
    totals.retries =
      (totals.retries ?? 0) + sum(text, /^cluster\.outbound\|.*\.upstream_rq_retry: /);
    totals.ejections =
      (totals.ejections ?? 0) +
      sum(text, /^cluster\.outbound\|.*\.outlier_detection\.ejections_enforced_total: /);
    totals.handshakes = (totals.handshakes ?? 0) + sum(text, /^listener\..*\.ssl\.handshake: /);
    totals.rbacDenied = (totals.rbacDenied ?? 0) + sum(text, /^http\.inbound_\d+\.rbac\.denied: /);
    totals.upstreamRequests =
      (totals.upstreamRequests ?? 0) + sum(text, /^cluster\.outbound\|.*\.upstream_rq_total: /);
  }
  return totals;
}
