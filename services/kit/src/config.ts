import { z } from "zod";

/** Raised when the environment does not describe a runnable service; `main` prints it and exits 1. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

const port = z.coerce.number().int().min(0).max(65535);
const positiveMs = z.coerce.number().int().positive();
const bool = z
  .enum(["true", "false", "1", "0", "yes", "no"])
  .transform((v) => v === "true" || v === "1" || v === "yes");
/** A secret key: base64 (standard or url-safe) of at least 32 random bytes. */
const secretKey = z
  .string()
  .regex(/^[A-Za-z0-9+/_-]+={0,2}$/, "must be base64")
  .refine((v) => Buffer.from(v, "base64").length >= 32, "must be at least 32 bytes, base64-encoded")
  .transform((v) => Buffer.from(v, "base64"));

/**
 * Settings every service shares. Each comes from one environment variable (12-factor);
 * defaults are the local `make up` values, so only what differs in a cluster is set there.
 */
export const kitConfigSchema = z.object({
  SERVICE_NAME: z.string().regex(/^[a-z][a-z0-9-]{1,40}$/),
  GRPC_PORT: port,
  HTTP_PORT: port,
  ADMIN_PORT: port,
  /** Address the three listeners bind; 0.0.0.0 in a pod, loopback locally. */
  BIND_HOST: z.string().min(1).default("127.0.0.1"),
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  /** Access log: a line per RPC ("all"), only for failed RPCs ("errors"), or none. */
  ACCESS_LOG: z.enum(["all", "errors", "off"]).default("all"),
  /** A call at least this slow gets a warning access-log line whatever its code (unless ACCESS_LOG=off). */
  ACCESS_LOG_SLOW_MS: positiveMs.default(1_000),
  /**
   * Connections in the service's Postgres pool. Every replica holds up to this many; size
   * it against the database's max_connections (deploy/README.md).
   */
  DATABASE_POOL_MAX: z.coerce.number().int().min(1).max(200).default(10),
  /** Upper bound on a request's deadline; a caller without one gets this. */
  MAX_DEADLINE_MS: positiveMs.default(30_000),
  /** How long SIGTERM waits for in-flight RPCs before forcing the listeners closed. */
  SHUTDOWN_GRACE_MS: positiveMs.default(20_000),
  MAX_MESSAGE_BYTES: z.coerce
    .number()
    .int()
    .min(1024)
    .max(64 * 1024 * 1024)
    .default(4 * 1024 * 1024),
  HEALTH_INTERVAL_MS: positiveMs.default(1_000),
  /** JWKS of the identity service; unset means no token can be verified (every caller is anonymous). */
  AUTH_JWKS_URL: z.url().optional(),
  AUTH_ISSUER: z.string().min(1).default("meshmart-identity"),
  AUTH_AUDIENCE: z.string().min(1).default("meshmart"),
  /** OTLP/HTTP traces endpoint; unset exports nothing (spans still carry ids for logs and propagation). */
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: z.url().optional(),
  OTEL_EXPORTER_OTLP_ENDPOINT: z.url().optional(),
  /**
   * Signs the page tokens of list methods (HMAC-SHA256), so a client cannot forge a cursor.
   * Every replica of a service needs the same key; in a cluster it comes from a Secret.
   * Unset (one local process): a key made at start, logged as such, so tokens do not
   * outlive the process.
   */
  PAGE_TOKEN_KEY: secretKey.optional(),
});

/** Parsed kit settings. */
export type KitConfig = z.infer<typeof kitConfigSchema>;

/** Common optional flags, exported so services can compose them into their own schemas. */
export const configFields = { port, positiveMs, bool, secretKey };

/**
 * Parses `env` with a service's schema (usually `kitConfigSchema.extend({...})`).
 * Throws ConfigError listing every bad or missing variable at once, never their values,
 * since a value may be a secret.
 */
export function loadConfig<S extends z.ZodType>(
  schema: S,
  env: Record<string, string | undefined> = process.env,
): z.infer<S> {
  const cleaned: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    // An empty variable means "unset" for every setting; shells and manifests produce them easily.
    if (v !== undefined && v !== "") cleaned[k] = v;
  }
  const result = schema.safeParse(cleaned);
  if (!result.success) {
    const lines = result.error.issues.map((issue) => {
      const name = issue.path.join(".") || "(environment)";
      return `  ${name}: ${issue.message}`;
    });
    throw new ConfigError(`invalid configuration:\n${lines.join("\n")}`);
  }
  return result.data;
}
