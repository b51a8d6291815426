import {
  createRuntime,
  instrumentStore,
  migrateEventTables,
  openServiceData,
  openServiceEvents,
  type RuntimeOverrides,
  type ServiceHost,
  serve,
} from "@meshmart/kit";
import type { PaymentsConfig } from "./config.js";
import { createFakePaymentProvider } from "./fake-payment-provider.js";
import type { PaymentProvider } from "./payment-provider.js";
import { createPaymentsRoutes } from "./routes.js";
import { createPaymentsStore } from "./store.js";

/** Payments' migrations folder. */
export const migrationsDir = new URL("../migrations/", import.meta.url);

/** What tests may replace when starting payments. */
export interface PaymentsOverrides extends RuntimeOverrides {
  /** The card processor; the fake PSP (test cards) by default. */
  provider?: PaymentProvider;
}

/**
 * Starts payments: migrates its database and the kit's event tables, ensures its event
 * stream, starts the outbox relay, and serves on the configured ports (0 = free port, as
 * tests use it). `close()` drains RPCs, then stops the relay and NATS, and releases the pool.
 */
export async function startPayments(
  config: PaymentsConfig,
  overrides: PaymentsOverrides = {},
): Promise<ServiceHost> {
  const { provider, ...runtimeOverrides } = overrides;
  const runtime = await createRuntime(config, runtimeOverrides);
  const { logger, registry } = runtime;
  const data = await openServiceData(runtime, {
    databaseUrl: config.DATABASE_URL,
    redisUrl: config.REDIS_URL,
    migrations: migrationsDir,
  });
  try {
    await migrateEventTables(data.sql, logger);
    const events = await openServiceEvents(runtime, {
      sql: data.sql,
      config,
      publishes: ["payments"],
    });
    try {
      const store = instrumentStore(
        createPaymentsStore(data.sql, events.names),
        "payments",
        registry,
      );
      const host = await serve(runtime, {
        routes: createPaymentsRoutes({
          store,
          provider:
            provider ?? createFakePaymentProvider({ latencyMs: config.FAKE_PSP_LATENCY_MS }),
          policy: {
            peerIdentity: config.MESH_PEER_IDENTITY,
            refundServiceAccounts: config.REFUND_SERVICE_ACCOUNTS,
          },
          logger,
        }),
        checks: [...data.checks, ...events.checks],
        // In-flight RPCs finish first (their events are in the outbox), then the relay, then the pool.
        onClose: async () => {
          await events.close();
          await data.close();
        },
      });
      events.startRelay();
      return host;
    } catch (reason) {
      await events.close();
      throw reason;
    }
  } catch (reason) {
    await data.close(1);
    throw reason;
  }
}

export { type PaymentsConfig, paymentsConfigSchema } from "./config.js";
export { createFakePaymentProvider, TEST_CARDS } from "./fake-payment-provider.js";
export { type PaymentProvider, ProviderUnavailableError } from "./payment-provider.js";
export { createPaymentsStore, type NetCaptured, type PaymentsStore } from "./store.js";
