import {
  instrumentStore,
  type RuntimeOverrides,
  type ServiceHost,
  startService,
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
export function startPayments(
  config: PaymentsConfig,
  overrides: PaymentsOverrides = {},
): Promise<ServiceHost> {
  const { provider, ...runtimeOverrides } = overrides;
  return startService(config, runtimeOverrides, {
    migrations: migrationsDir,
    publishes: ["payments"],
    build: ({ runtime, data, events }) => ({
      routes: createPaymentsRoutes({
        store: instrumentStore(
          createPaymentsStore(data.sql, events.names),
          "payments",
          runtime.registry,
        ),
        provider: provider ?? createFakePaymentProvider({ latencyMs: config.FAKE_PSP_LATENCY_MS }),
        policy: {
          peerIdentity: config.MESH_PEER_IDENTITY,
          refundServiceAccounts: config.REFUND_SERVICE_ACCOUNTS,
        },
        logger: runtime.logger,
      }),
    }),
  });
}

export { type PaymentsConfig, paymentsConfigSchema } from "./config.js";
export { createFakePaymentProvider, TEST_CARDS } from "./fake-payment-provider.js";
export { type PaymentProvider, ProviderUnavailableError } from "./payment-provider.js";
export { createPaymentsStore, type NetCaptured, type PaymentsStore } from "./store.js";
