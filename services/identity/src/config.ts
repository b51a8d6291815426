import { eventConfigFields, kitConfigSchema } from "@meshmart/kit";
import { z } from "zod";

const positiveInt = z.coerce.number().int().positive();

/** 32 bytes, base64 (standard or url-safe). Never defaulted: a key in code is no key. */
const encryptionKey = z
  .string()
  .refine((v) => Buffer.from(v, "base64").length === 32, "must be 32 bytes, base64-encoded")
  .transform((v) => Buffer.from(v, "base64"));

/** Identity's settings: the kit's plus its database, throttle store, keys and token lifetimes. */
export const identityConfigSchema = kitConfigSchema.extend({
  ...eventConfigFields,
  DATABASE_URL: z.string().regex(/^postgres(ql)?:\/\//, "must be a postgres:// URL"),
  REDIS_URL: z.string().regex(/^rediss?:\/\//, "must be a redis:// URL"),
  /** Encrypts signing keys at rest (AES-256-GCM). Required; from a Secret in a cluster. */
  IDENTITY_KEY_ENCRYPTION_KEY: encryptionKey,
  /** Access token lifetime; also how long a rotated-out signing key stays published. */
  ACCESS_TOKEN_TTL_S: positiveInt.default(900),
  REFRESH_TOKEN_TTL_S: positiveInt.default(2_592_000),
  /** First admin: granted admin at start; created when the password is set too. */
  IDENTITY_BOOTSTRAP_ADMIN_EMAIL: z.email().optional(),
  IDENTITY_BOOTSTRAP_ADMIN_PASSWORD: z.string().min(12).max(128).optional(),
  /** Failed logins allowed per account / per client within the window. */
  LOGIN_MAX_FAILURES_PER_ACCOUNT: positiveInt.default(5),
  LOGIN_MAX_FAILURES_PER_CLIENT: positiveInt.default(20),
  LOGIN_THROTTLE_WINDOW_S: positiveInt.default(900),
  /** Prefix of the throttle counters' keys, so deployments (and test runs) never collide. */
  IDENTITY_REDIS_PREFIX: z.string().max(64).default("meshmart:identity:"),
});

/** Parsed identity settings. */
export type IdentityConfig = z.infer<typeof identityConfigSchema>;
