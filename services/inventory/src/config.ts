import { configFields, eventConfigFields, kitConfigSchema } from "@meshmart/kit";
import { z } from "zod";

/** Inventory's settings: the kit's plus its database, events and the reservation expiry. */
export const inventoryConfigSchema = kitConfigSchema.extend({
  ...eventConfigFields,
  DATABASE_URL: z.string().regex(/^postgres(ql)?:\/\//, "must be a postgres:// URL"),
  /** openServiceData connects Redis for every service; inventory keeps nothing in it yet. */
  REDIS_URL: z.string().regex(/^rediss?:\/\//, "must be a redis:// URL"),
  /**
   * How long a reservation may stay RESERVED before the sweeper releases it. Longer than
   * any saga step (payment authorization included) takes, so only abandoned ones expire.
   */
  RESERVATION_TTL_MS: configFields.positiveMs.default(15 * 60_000),
  /** How often the sweeper looks for expired reservations. */
  RESERVATION_SWEEP_INTERVAL_MS: configFields.positiveMs.default(30_000),
  /** Reservations the sweeper releases per query round. */
  RESERVATION_SWEEP_BATCH: z.coerce.number().int().min(1).max(10_000).default(100),
  /**
   * When above 0, inventory consumes catalog's ProductCreated and gives each new product
   * this many units (local `make up` demo). 0, the default, leaves stock to SetStock.
   */
  INITIAL_STOCK_ON_PRODUCT_CREATED: z.coerce.number().int().min(0).max(1_000_000).default(0),
  /**
   * Local `make up`: accepted for symmetry with the other services. Inventory cannot know
   * the demo catalog's products on its own; the stock is seeded with `seedStock`.
   */
  SEED_DEMO: configFields.bool.default(false),
});

/** Parsed inventory settings. */
export type InventoryConfig = z.infer<typeof inventoryConfigSchema>;
