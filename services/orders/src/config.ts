import { configFields, eventConfigFields, kitConfigSchema } from "@meshmart/kit";
import { z } from "zod";

/** 32 bytes, base64 (standard or url-safe). Never defaulted: a key in code is no key. */
const encryptionKey = z
  .string()
  .refine((v) => Buffer.from(v, "base64").length === 32, "must be 32 bytes, base64-encoded")
  .transform((v) => Buffer.from(v, "base64"));

/** A peer's gRPC base URL, `http://host:port` (h2c inside the pod; the sidecar does mTLS). */
const grpcBaseUrl = z
  .url()
  .regex(/^https?:\/\/[^/]+\/?$/, "must be http(s)://host:port with no path");

const count = (max: number) => z.coerce.number().int().min(1).max(max);

/** Orders' settings: the kit's plus its database, events, its peers and the saga's knobs. */
export const ordersConfigSchema = kitConfigSchema
  .extend({
    DATABASE_URL: z.string().regex(/^postgres(ql)?:\/\//, "must be a postgres:// URL"),
    /** openServiceData connects Redis for every service; orders keeps nothing in it yet. */
    REDIS_URL: z.string().regex(/^rediss?:\/\//, "must be a redis:// URL"),
    ...eventConfigFields,
    /** Catalog's gRPC port: product names and prices. */
    CATALOG_URL: grpcBaseUrl,
    /** Inventory's gRPC port: the saga's reservations. */
    INVENTORY_URL: grpcBaseUrl,
    /** Payments' gRPC port: the saga's authorization, capture, void, refund. */
    PAYMENTS_URL: grpcBaseUrl,
    /**
     * Encrypts the card the saga keeps between PlaceOrder and the authorization
     * (AES-256-GCM). Required; from a Secret in a cluster. Every replica needs the same key,
     * and an order placed under an old key can only be authorized while that key is set.
     */
    SAGA_CARD_KEY: encryptionKey,
    /** Sagas one replica drives at once. */
    SAGA_CONCURRENCY: count(1_000).default(32),
    /** How often a replica looks for due sagas (others' retries, a crashed replica's work). */
    SAGA_POLL_MS: configFields.positiveMs.default(200),
    /** Deadline of each remote call a saga step makes. */
    SAGA_STEP_TIMEOUT_MS: configFields.positiveMs.default(5_000),
    /**
     * How long a claimed step belongs to its worker. A replica that dies mid-step holds its
     * sagas this long; then any replica resumes them. Must exceed the step timeout.
     */
    SAGA_LEASE_MS: configFields.positiveMs.default(15_000),
    /** First retry delay after a transient failure; doubles per attempt, with jitter. */
    SAGA_RETRY_BASE_MS: configFields.positiveMs.default(100),
    /** Longest retry delay. */
    SAGA_RETRY_MAX_MS: configFields.positiveMs.default(5_000),
    /**
     * Attempts of RESERVE or AUTHORIZE before the saga gives up and cancels the order with
     * CANCEL_CODE_INTERNAL_ERROR. Later steps and the compensation retry until they succeed.
     */
    SAGA_MAX_ATTEMPTS: count(100_000).default(30),
    /**
     * After inventory refuses an order for lack of a product, a replica cancels the new
     * orders wanting more than it had without asking, and lets one order ask again every
     * this often (sold-out-hints.ts): units that come back are offered once that order
     * finds them. A reservation that succeeds ends it. 0 turns it off.
     */
    SOLD_OUT_HINT_MS: z.coerce.number().int().min(0).max(60_000).default(250),
    /** How long CancelOrder waits for the compensation to finish before telling the caller to retry. */
    CANCEL_WAIT_MS: configFields.positiveMs.default(10_000),
    /**
     * WatchOrder is woken by the order's events (published by whichever replica moves it);
     * it also re-reads the order this often, in case NATS was away when one went out.
     */
    WATCH_FALLBACK_MS: configFields.positiveMs.default(10_000),
  })
  .refine((c) => c.SAGA_LEASE_MS >= c.SAGA_STEP_TIMEOUT_MS + 1_000, {
    path: ["SAGA_LEASE_MS"],
    message: "must exceed SAGA_STEP_TIMEOUT_MS by at least 1000",
  })
  .refine((c) => c.SAGA_RETRY_MAX_MS >= c.SAGA_RETRY_BASE_MS, {
    path: ["SAGA_RETRY_MAX_MS"],
    message: "must be at least SAGA_RETRY_BASE_MS",
  });

/** Parsed orders settings. */
export type OrdersConfig = z.infer<typeof ordersConfigSchema>;
