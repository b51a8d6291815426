import {
  createPageTokens,
  createServiceClient,
  instrumentStore,
  type Runtime,
  type RuntimeOverrides,
  type ServiceData,
  type ServiceEvents,
  type ServiceHost,
  type ServiceParts,
  startService,
} from "@meshmart/kit";
import { CatalogService } from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_service_pb.js";
import { InventoryService } from "@meshmart/kit/gen/meshmart/inventory/v1/inventory_service_pb.js";
import { ListOrdersRequestSchema } from "@meshmart/kit/gen/meshmart/orders/v1/orders_service_pb.js";
import { PaymentService } from "@meshmart/kit/gen/meshmart/payments/v1/payments_service_pb.js";
import { createCardVault } from "./card-vault.js";
import type { OrdersConfig } from "./config.js";
import { createOrderChanges } from "./order-changes.js";
import { createOrderEventTap } from "./order-event-tap.js";
import { createOrdersRoutes } from "./routes.js";
import { runStep, type SagaDeps } from "./saga.js";
import { createSagaWorker } from "./saga-worker.js";
import { createSoldOutHints } from "./sold-out-hints.js";
import { createOrdersStore } from "./store.js";

export { type OrdersConfig, ordersConfigSchema } from "./config.js";

/** Orders' migrations folder. */
export const migrationsDir = new URL("../migrations/", import.meta.url);

/**
 * Starts orders: migrates its database and the kit's event tables, ensures its event
 * stream, starts the outbox relay and the saga worker (which resumes every unfinished saga
 * in the database, whoever started it) and serves on the configured ports (0 = free port,
 * as tests use it). `close()` stops taking RPCs, lets the saga steps in flight finish and
 * record, then stops the relay and NATS and releases the pool.
 */
export function startOrders(
  config: OrdersConfig,
  overrides: RuntimeOverrides = {},
): Promise<ServiceHost> {
  return startService(config, overrides, {
    migrations: migrationsDir,
    publishes: ["orders"],
    build: ({ runtime, data, events }) => buildOrders(runtime, config, data, events),
  });
}

function buildOrders(
  runtime: Runtime,
  config: OrdersConfig,
  data: ServiceData,
  events: ServiceEvents,
): ServiceParts {
  const { logger, registry, metrics } = runtime;
  const store = instrumentStore(createOrdersStore(data.sql, events.names), "orders", registry);
  const clientOptions = { service: config.SERVICE_NAME, metrics };
  const vault = createCardVault(config.SAGA_CARD_KEY);
  const soldOut = createSoldOutHints(config.SOLD_OUT_HINT_MS);
  // The saga's calls carry no user token: it runs without a request (after a restart, long
  // after the customer left). Inventory and payments accept token-less calls for the
  // saga's RPCs; the mesh's AuthorizationPolicy is what limits them to orders.
  const sagaDeps: SagaDeps = {
    inventory: createServiceClient(InventoryService, config.INVENTORY_URL, clientOptions),
    payments: createServiceClient(PaymentService, config.PAYMENTS_URL, clientOptions),
    vault,
    logger,
    stepTimeoutMs: config.SAGA_STEP_TIMEOUT_MS,
    retryBaseMs: config.SAGA_RETRY_BASE_MS,
    retryMaxMs: config.SAGA_RETRY_MAX_MS,
    maxAttempts: config.SAGA_MAX_ATTEMPTS,
    soldOut,
  };
  const changes = createOrderChanges();
  const worker = createSagaWorker({
    store,
    runStep: (saga, record) => runStep(saga, record, sagaDeps),
    onChange: (orderId, terminal) => changes.notify(orderId, terminal),
    logger,
    registry,
    concurrency: config.SAGA_CONCURRENCY,
    pollMs: config.SAGA_POLL_MS,
    leaseMs: config.SAGA_LEASE_MS,
  });
  const routes = createOrdersRoutes({
    store,
    catalog: createServiceClient(CatalogService, config.CATALOG_URL, clientOptions),
    vault,
    saga: worker,
    soldOut,
    changes,
    logger,
    pollMs: config.SAGA_POLL_MS,
    leaseMs: config.SAGA_LEASE_MS,
    watchFallbackMs: config.WATCH_FALLBACK_MS,
    shuttingDown: runtime.shuttingDown,
    cancelWaitMs: config.CANCEL_WAIT_MS,
    pageTokens: createPageTokens(runtime.pageTokenKey(), ListOrdersRequestSchema.field.pageToken),
  });
  // The worker writes terminal events, so it stops before the relay.
  return {
    routes,
    workers: [worker, createOrderEventTap({ events, changes, logger })],
  };
}
