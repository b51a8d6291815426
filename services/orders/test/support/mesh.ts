import { randomBytes, randomUUID } from "node:crypto";
import {
  type CallOptions,
  type Client,
  Code,
  ConnectError,
  createClient,
} from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { startCatalog } from "@meshmart/catalog";
import { catalogConfigSchema } from "@meshmart/catalog/config";
import { startInventory } from "@meshmart/inventory";
import { inventoryConfigSchema } from "@meshmart/inventory/config";
import {
  createEventNames,
  createLogger,
  createPostgres,
  type EventNames,
  loadConfig,
  type ServiceHost,
  type Sql,
} from "@meshmart/kit";
import type { Product } from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_pb.js";
import { CatalogService } from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_service_pb.js";
import type { StockLevel } from "@meshmart/kit/gen/meshmart/inventory/v1/inventory_pb.js";
import { InventoryService } from "@meshmart/kit/gen/meshmart/inventory/v1/inventory_service_pb.js";
import { type Order, OrderStatus } from "@meshmart/kit/gen/meshmart/orders/v1/orders_pb.js";
import { OrderService } from "@meshmart/kit/gen/meshmart/orders/v1/orders_service_pb.js";
import { PaymentService } from "@meshmart/kit/gen/meshmart/payments/v1/payments_service_pb.js";
import {
  createLogSink,
  createTestDatabase,
  createTestIssuer,
  type LogSink,
  openTestEvents,
  type TestDatabase,
  type TestIssuer,
  testNatsUrl,
  testRedisUrl,
  uniqueName,
} from "@meshmart/kit/testing";
import { type PaymentProvider, ProviderUnavailableError, startPayments } from "@meshmart/payments";
import { paymentsConfigSchema } from "@meshmart/payments/config";
// The fake card processor payments runs with by default; wrapped below so a test can hold
// or fail authorizations at the processor while payments itself runs for real.
import { createFakePaymentProvider } from "../../../payments/src/fake-payment-provider.js";
import { ordersConfigSchema } from "../../src/config.js";
import { startOrders } from "../../src/server.js";

/** The test cards of meshmart.common.v1.Card. */
export const CARDS = {
  approved: "4242424242424242",
  declined: "4000000000000002",
  insufficientFunds: "4000000000009995",
} as const;

/** A card as PaymentInput carries it. */
export function card(number: string = CARDS.approved) {
  return { number, expMonth: 12, expYear: new Date().getUTCFullYear() + 3, cvc: "123" };
}

/**
 * The card processor behind the real payments service, steerable per test: authorizations
 * can be held (in flight until released) or refused as unreachable (payments answers
 * UNAVAILABLE). Capture, void and refund always go through.
 */
export interface ControlledProcessor {
  provider: PaymentProvider;
  /** Authorizations from now on wait until {@link release}. */
  hold(): void;
  release(): void;
  /** Authorizations fail as if the processor were down (or work again). */
  setDown(down: boolean): void;
  /** Authorizations that reached the processor (approved or not). */
  authorizations(): number;
}

function createControlledProcessor(): ControlledProcessor {
  const inner = createFakePaymentProvider();
  let down = false;
  let gate: Promise<void> | undefined;
  let open: (() => void) | undefined;
  let count = 0;
  return {
    provider: {
      async authorize(input) {
        if (gate !== undefined) {
          const held = gate;
          await new Promise<void>((resolve, reject) => {
            held.then(resolve, reject);
            input.signal?.addEventListener("abort", () =>
              reject(new ProviderUnavailableError("the caller gave up")),
            );
          });
        }
        if (down) throw new ProviderUnavailableError("the test processor is down");
        count++;
        return inner.authorize(input);
      },
      capture: (input) => inner.capture(input),
      void: (input) => inner.void(input),
      refund: (input) => inner.refund(input),
    },
    hold() {
      gate ??= new Promise<void>((resolve) => {
        open = resolve;
      });
    },
    release() {
      open?.();
      gate = undefined;
      open = undefined;
    },
    setDown(value) {
      down = value;
    },
    authorizations: () => count,
  };
}

/** Catalog, inventory and payments, real and on port 0, each on its own test database. */
export interface Mesh {
  issuer: TestIssuer;
  redisUrl: string;
  natsUrl: string;
  /** The run's event namespace, shared by every service of the mesh. */
  names: EventNames;
  catalogUrl: string;
  inventoryUrl: string;
  paymentsUrl: string;
  catalog: Client<typeof CatalogService>;
  inventory: Client<typeof InventoryService>;
  payments: Client<typeof PaymentService>;
  processor: ControlledProcessor;
  /** payments' own database, to count what it holds per order. */
  paymentsSql: Sql;
  /** Call options with role admin. */
  admin: CallOptions;
  /** Creates a product in catalog and sets its stock in inventory (unless `stock` is null). */
  product(options: {
    units: bigint;
    nanos?: number;
    stock: bigint | null;
    currency?: string;
  }): Promise<Product>;
  stockOf(productId: string): Promise<StockLevel>;
  close(): Promise<void>;
}

const quiet = () => createLogSink();

/** Starts the mesh orders talks to. */
export async function startMesh(label: string): Promise<Mesh> {
  const [issuer, redisUrl, natsUrl] = await Promise.all([
    createTestIssuer(),
    testRedisUrl(),
    testNatsUrl(),
  ]);
  const namespace = uniqueName("ord");
  const names = createEventNames(namespace);
  const common = {
    GRPC_PORT: "0",
    HTTP_PORT: "0",
    ADMIN_PORT: "0",
    LOG_LEVEL: "info",
    REDIS_URL: redisUrl,
    NATS_URL: natsUrl,
    EVENTS_NAMESPACE: namespace,
  };
  const dbs: TestDatabase[] = [];
  const hosts: ServiceHost[] = [];
  let paymentsSql: Sql | undefined;
  const cleanup = async () => {
    for (const host of hosts.reverse()) await host.close();
    await paymentsSql?.end({ timeout: 1 });
    for (const db of dbs) await db.drop();
    await (await openTestEvents("orders", { natsUrl, namespace })).close();
  };
  try {
    const [catalogDb, inventoryDb, paymentsDb] = await Promise.all([
      createTestDatabase(`${label}_catalog`),
      createTestDatabase(`${label}_inventory`),
      createTestDatabase(`${label}_payments`),
    ]);
    dbs.push(catalogDb, inventoryDb, paymentsDb);
    const processor = createControlledProcessor();
    const catalogHost = await startCatalog(
      loadConfig(catalogConfigSchema, {
        ...common,
        SERVICE_NAME: "catalog",
        DATABASE_URL: catalogDb.url,
        CACHE_PREFIX: `${uniqueName("ordcat")}:`,
      }),
      { logDestination: quiet().stream, verifier: issuer.verifier },
    );
    hosts.push(catalogHost);
    const inventoryHost = await startInventory(
      loadConfig(inventoryConfigSchema, {
        ...common,
        SERVICE_NAME: "inventory",
        DATABASE_URL: inventoryDb.url,
      }),
      { logDestination: quiet().stream, verifier: issuer.verifier },
    );
    hosts.push(inventoryHost);
    const paymentsHost = await startPayments(
      loadConfig(paymentsConfigSchema, {
        ...common,
        SERVICE_NAME: "payments",
        DATABASE_URL: paymentsDb.url,
      }),
      { logDestination: quiet().stream, verifier: issuer.verifier, provider: processor.provider },
    );
    hosts.push(paymentsHost);
    paymentsSql = createPostgres({
      url: paymentsDb.url,
      service: "orders-test",
      logger: createLogger({ service: "orders-test", level: "silent" }),
      max: 2,
    });
    const grpc = (host: ServiceHost) => `http://${host.grpcTarget}`;
    const client = <T extends Parameters<typeof createClient>[0]>(desc: T, host: ServiceHost) =>
      createClient(desc, createGrpcTransport({ baseUrl: grpc(host) }));
    const catalog = client(CatalogService, catalogHost);
    const inventory = client(InventoryService, inventoryHost);
    const admin: CallOptions = {
      headers: { authorization: `Bearer ${await issuer.token({ roles: ["admin"] })}` },
    };
    return {
      issuer,
      redisUrl,
      natsUrl,
      names,
      catalogUrl: grpc(catalogHost),
      inventoryUrl: grpc(inventoryHost),
      paymentsUrl: grpc(paymentsHost),
      catalog,
      inventory,
      payments: client(PaymentService, paymentsHost),
      processor,
      paymentsSql,
      admin,
      async product({ units, nanos = 0, stock, currency = "EUR" }) {
        const sku = `ORD-${randomBytes(5).toString("hex").toUpperCase()}`;
        const { product } = await catalog.createProduct(
          {
            requestId: randomUUID(),
            sku,
            name: `Test product ${sku}`,
            category: "test",
            price: { currencyCode: currency, units, nanos },
          },
          admin,
        );
        if (product === undefined) throw new Error("CreateProduct answered without a product");
        if (stock !== null) {
          await inventory.setStock({ productId: product.id, sku, onHand: stock }, admin);
        }
        return product;
      },
      async stockOf(productId) {
        const { stock } = await inventory.getStock(
          { key: { case: "productId", value: productId } },
          admin,
        );
        if (stock === undefined) throw new Error("GetStock answered without a stock level");
        return stock;
      },
      close: cleanup,
    };
  } catch (reason) {
    await cleanup();
    throw reason;
  }
}

/** SAGA_STEP_TIMEOUT_MS of the orders tests start: the deadline of each saga step's call. */
export const STEP_TIMEOUT_MS = 2_000;

/** The environment orders' `main` would see for this mesh, on port 0 everywhere. */
export function ordersEnv(
  mesh: Mesh,
  databaseUrl: string,
  cardKey: string,
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    SERVICE_NAME: "orders",
    GRPC_PORT: "0",
    HTTP_PORT: "0",
    ADMIN_PORT: "0",
    LOG_LEVEL: "debug",
    DATABASE_URL: databaseUrl,
    REDIS_URL: mesh.redisUrl,
    NATS_URL: mesh.natsUrl,
    EVENTS_NAMESPACE: mesh.names.namespace,
    CATALOG_URL: mesh.catalogUrl,
    INVENTORY_URL: mesh.inventoryUrl,
    PAYMENTS_URL: mesh.paymentsUrl,
    SAGA_CARD_KEY: cardKey,
    // Fast enough for tests, and crash recovery within seconds.
    SAGA_POLL_MS: "100",
    SAGA_RETRY_BASE_MS: "50",
    SAGA_RETRY_MAX_MS: "400",
    SAGA_STEP_TIMEOUT_MS: String(STEP_TIMEOUT_MS),
    SAGA_LEASE_MS: "3000",
    SAGA_MAX_ATTEMPTS: "1000",
    ...extra,
  };
}

/** An orders served by `startOrders`, with a gRPC client and its logs in memory. */
export interface RunningOrders {
  host: ServiceHost;
  /** The SAGA_CARD_KEY it runs with (a second replica needs the same). */
  cardKey: string;
  client: Client<typeof OrderService>;
  logs: LogSink;
  close(): Promise<void>;
}

/** Starts the real orders (config parsed as `main` parses it) against `databaseUrl`. */
export async function startTestOrders(
  mesh: Mesh,
  databaseUrl: string,
  cardKey: string,
  extra: Record<string, string> = {},
): Promise<RunningOrders> {
  const config = loadConfig(ordersConfigSchema, ordersEnv(mesh, databaseUrl, cardKey, extra));
  const logs = createLogSink();
  const host = await startOrders(config, {
    logDestination: logs.stream,
    verifier: mesh.issuer.verifier,
  });
  return {
    host,
    cardKey,
    logs,
    client: createClient(
      OrderService,
      createGrpcTransport({ baseUrl: `http://${host.grpcTarget}` }),
    ),
    close: () => host.close(),
  };
}

/** A fresh 32-byte card key, base64. */
export function newCardKey(): string {
  return randomBytes(32).toString("base64");
}

/** A customer: their id and call options carrying their token. */
export interface Customer {
  userId: string;
  options: CallOptions;
}

/** A new customer with a token from the mesh's issuer. */
export async function newCustomer(mesh: Mesh, roles: string[] = ["customer"]): Promise<Customer> {
  const userId = randomUUID();
  const token = await mesh.issuer.token({ sub: userId, roles, expiresIn: "30m" });
  return { userId, options: { headers: { authorization: `Bearer ${token}` } } };
}

/** Reads the order until it is terminal; fails after `timeoutMs`. */
export async function waitForTerminal(
  client: Client<typeof OrderService>,
  orderId: string,
  options: CallOptions,
  timeoutMs = 20_000,
): Promise<Order> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const { order } = await client.getOrder({ orderId }, options);
    if (order !== undefined && order.status !== OrderStatus.PENDING) return order;
    if (Date.now() > until) {
      throw new Error(`order ${orderId} still ${order?.status} after ${timeoutMs} ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** An order {@link settleOrders} followed to its end. */
export interface SettledOrder {
  order: Order;
  /** When its terminal state reached the client (epoch ms). */
  receivedAt: number;
}

/** A saga as the progress check sees it. */
interface SagaProgress {
  id: string;
  step: string;
  attempts: number;
  claimed: boolean;
  last_error: string | null;
  idle_ms: number;
}

/**
 * Follows each order with WatchOrder until it is terminal, failing as soon as one stops
 * moving: a PENDING order whose order and saga rows have not changed for `idleLimitMs`
 * (one query over all of them, every `checkEveryMs`). A run that is slow but moving (a
 * loaded CI machine) stays green and a stuck order fails fast with its saga in the message,
 * where one deadline for the whole burst could do neither. Streams instead of polling each
 * order keep the test's own load on orders small: one read per change, not 20 a second.
 */
export async function settleOrders(
  client: Client<typeof OrderService>,
  sql: Sql,
  orders: readonly { id: string; options: CallOptions }[],
  { idleLimitMs, checkEveryMs = 250 }: { idleLimitMs: number; checkEveryMs?: number },
): Promise<SettledOrder[]> {
  const stop = new AbortController();
  const follow = async ({ id, options }: { id: string; options: CallOptions }) => {
    for (;;) {
      let last: Order | undefined;
      try {
        for await (const res of client.watchOrder(
          { orderId: id },
          { ...options, signal: stop.signal },
        )) {
          last = res.order;
        }
      } catch (reason) {
        // The server's deadline (MAX_DEADLINE_MS) may end a long watch: watch again.
        if (stop.signal.aborted || ConnectError.from(reason).code !== Code.DeadlineExceeded) {
          throw reason;
        }
      }
      if (last !== undefined && last.status !== OrderStatus.PENDING) {
        return { order: last, receivedAt: Date.now() };
      }
    }
  };
  const ids = orders.map((o) => o.id);
  let stalled: Error | undefined;
  const monitor = (async () => {
    while (!stop.signal.aborted) {
      const pending = await sql<SagaProgress[]>`
        select o.id, s.step, s.attempts, s.claim_token is not null as claimed, s.last_error,
          (extract(epoch from now() - greatest(o.updated_at, s.updated_at)) * 1000)::int as idle_ms
        from orders o join order_sagas s on s.order_id = o.id
        where o.id in ${sql(ids)} and o.status = 'PENDING'
        order by idle_ms desc`;
      const [idlest] = pending;
      if (idlest !== undefined && idlest.idle_ms > idleLimitMs) {
        stalled = new Error(
          `order ${idlest.id} made no progress for ${idlest.idle_ms} ms (limit ${idleLimitMs} ms; ${pending.length} still pending): ${JSON.stringify(idlest)}`,
        );
        stop.abort();
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, checkEveryMs));
    }
  })().catch((reason: unknown) => {
    stalled = reason instanceof Error ? reason : new Error(String(reason));
    stop.abort();
  });
  try {
    return await Promise.all(orders.map(follow));
  } catch (reason) {
    throw stalled ?? reason;
  } finally {
    stop.abort();
    await monitor;
  }
}

/** Polls `probe` until it returns a value other than undefined; fails after `timeoutMs`. */
export async function eventually<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 15_000,
): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** A pool on orders' database for checks behind the API. */
export function ordersSql(url: string): Sql {
  return createPostgres({
    url,
    service: "orders-test",
    logger: createLogger({ service: "orders-test", level: "silent" }),
    max: 2,
  });
}
