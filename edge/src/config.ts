import { z } from "zod";
import { parseRate, parseRateOverrides, type Rate } from "./rate-limit.js";
import { parseUpstreams } from "./upstreams.js";

const port = z.coerce.number().int().min(0).max(65535);
const positiveInt = z.coerce.number().int().positive();

/** Services the edge publishes, and the per-service variable that may name each upstream. */
export const SERVICE_NAMES = ["catalog", "identity", "orders", "notifications"] as const;

/**
 * The edge's settings, one environment variable each. Upstreams come from UPSTREAMS
 * (`catalog=127.0.0.1:9102,identity=127.0.0.1:9101`) and/or one variable per service
 * (CATALOG_GRPC_ADDR=127.0.0.1:9102); the per-service variable wins.
 */
export const edgeConfigSchema = z
  .object({
    EDGE_PORT: port.default(8080),
    /**
     * HTTP/2 cleartext (prior knowledge, as h2load and gRPC-era clients speak it) on its own
     * port; unset = off. Node's HTTP/2 session reads the socket natively, so one port can't
     * sniff and serve both protocols.
     */
    EDGE_H2C_PORT: port.optional(),
    EDGE_HOST: z.string().min(1).default("127.0.0.1"),
    UPSTREAMS: z.string().default(""),
    CATALOG_GRPC_ADDR: z.string().optional(),
    IDENTITY_GRPC_ADDR: z.string().optional(),
    ORDERS_GRPC_ADDR: z.string().optional(),
    NOTIFICATIONS_GRPC_ADDR: z.string().optional(),
    /** identity's JWKS; unset means no token verifies (every protected route answers 401). */
    AUTH_JWKS_URL: z.url().optional(),
    AUTH_ISSUER: z.string().min(1).default("meshmart-identity"),
    AUTH_AUDIENCE: z.string().min(1).default("meshmart"),
    EDGE_MAX_BODY_BYTES: positiveInt.default(1024 * 1024),
    EDGE_REQUEST_TIMEOUT_MS: positiveInt.default(15_000),
    /** Comma-separated allowed origins, or "*"; empty disables CORS. */
    EDGE_CORS_ORIGINS: z.string().default(""),
    LOG_LEVEL: z
      .enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"])
      .default("info"),
    SHUTDOWN_GRACE_MS: positiveInt.default(10_000),
    /** Use the first x-forwarded-for hop as the client IP (only behind a trusted proxy). */
    EDGE_TRUST_FORWARDED: z.enum(["true", "false"]).default("false"),
    /** Default per-client limit "rate/burst" (tokens/s, bucket size); unset or "off" = none. */
    EDGE_RATE_LIMIT: z.string().default("off"),
    /** Per-method overrides: "Login=1/5,SignUp=0.5/3,ListProducts=off". */
    EDGE_RATE_LIMITS: z.string().default(""),
    EDGE_RATE_LIMIT_MAX_KEYS: positiveInt.default(100_000),
    /** Requests/s across every edge replica sharing EDGE_REDIS_URL + EDGE_REDIS_PREFIX. */
    EDGE_GLOBAL_RATE_LIMIT: positiveInt.optional(),
    /** Redis for the global limit; unset = no global limit. */
    EDGE_REDIS_URL: z.string().min(1).optional(),
    EDGE_REDIS_PREFIX: z.string().default("edge:"),
    /** Connect/gRPC-Web ports: "catalog=127.0.0.1:9202,…"; default: the gRPC port + 100. */
    UPSTREAMS_HTTP: z.string().default(""),
    CATALOG_HTTP_ADDR: z.string().optional(),
    IDENTITY_HTTP_ADDR: z.string().optional(),
    ORDERS_HTTP_ADDR: z.string().optional(),
    NOTIFICATIONS_HTTP_ADDR: z.string().optional(),
    /** The storefront's build (web/dist) to serve at `/`; unset = no site. */
    EDGE_STATIC_DIR: z.string().min(1).optional(),
  })
  .transform((env, ctx) => {
    let upstreams: Record<string, string>;
    let httpUpstreams: Record<string, string>;
    let defaultRate: Rate | "off";
    let perMethod: Record<string, Rate | "off">;
    try {
      upstreams = parseUpstreams(env.UPSTREAMS);
      httpUpstreams = parseUpstreams(env.UPSTREAMS_HTTP);
      defaultRate = parseRate(env.EDGE_RATE_LIMIT);
      perMethod = parseRateOverrides(env.EDGE_RATE_LIMITS);
    } catch (reason) {
      ctx.addIssue({ code: "custom", path: ["UPSTREAMS"], message: String(reason) });
      return z.NEVER;
    }
    if (env.EDGE_GLOBAL_RATE_LIMIT !== undefined && env.EDGE_REDIS_URL === undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["EDGE_REDIS_URL"],
        message: "EDGE_GLOBAL_RATE_LIMIT needs EDGE_REDIS_URL",
      });
      return z.NEVER;
    }
    const perService = {
      catalog: env.CATALOG_GRPC_ADDR,
      identity: env.IDENTITY_GRPC_ADDR,
      orders: env.ORDERS_GRPC_ADDR,
      notifications: env.NOTIFICATIONS_GRPC_ADDR,
    };
    for (const [name, address] of Object.entries(perService)) {
      if (address === undefined) continue;
      if (!/^[^\s=]+:\d{1,5}$/.test(address)) {
        ctx.addIssue({
          code: "custom",
          path: [`${name.toUpperCase()}_GRPC_ADDR`],
          message: "expected host:port",
        });
        return z.NEVER;
      }
      upstreams[name] = address;
    }
    const perServiceHttp = {
      catalog: env.CATALOG_HTTP_ADDR,
      identity: env.IDENTITY_HTTP_ADDR,
      orders: env.ORDERS_HTTP_ADDR,
      notifications: env.NOTIFICATIONS_HTTP_ADDR,
    };
    for (const [name, address] of Object.entries(perServiceHttp)) {
      if (address === undefined) continue;
      if (!/^[^\s=]+:\d{1,5}$/.test(address)) {
        ctx.addIssue({
          code: "custom",
          path: [`${name.toUpperCase()}_HTTP_ADDR`],
          message: "expected host:port",
        });
        return z.NEVER;
      }
      httpUpstreams[name] = address;
    }
    // Unset: the service's gRPC port + 100 (the services' convention: 9102 → 9202).
    for (const [name, address] of Object.entries(upstreams)) {
      if (httpUpstreams[name] !== undefined) continue;
      const colon = address.lastIndexOf(":");
      const grpcPort = Number(address.slice(colon + 1));
      if (grpcPort + 100 <= 65535) {
        httpUpstreams[name] = `${address.slice(0, colon)}:${grpcPort + 100}`;
      }
    }
    const origins = env.EDGE_CORS_ORIGINS.split(",")
      .map((o) => o.trim())
      .filter((o) => o !== "");
    return {
      port: env.EDGE_PORT,
      h2cPort: env.EDGE_H2C_PORT,
      host: env.EDGE_HOST,
      upstreams,
      jwksUrl: env.AUTH_JWKS_URL,
      issuer: env.AUTH_ISSUER,
      audience: env.AUTH_AUDIENCE,
      maxBodyBytes: env.EDGE_MAX_BODY_BYTES,
      requestTimeoutMs: env.EDGE_REQUEST_TIMEOUT_MS,
      corsOrigins: origins,
      logLevel: env.LOG_LEVEL,
      SHUTDOWN_GRACE_MS: env.SHUTDOWN_GRACE_MS,
      trustForwarded: env.EDGE_TRUST_FORWARDED === "true",
      rateLimit: {
        default: defaultRate === "off" ? undefined : defaultRate,
        perMethod,
        maxKeys: env.EDGE_RATE_LIMIT_MAX_KEYS,
      },
      globalRateLimit: env.EDGE_GLOBAL_RATE_LIMIT,
      redisUrl: env.EDGE_REDIS_URL,
      redisPrefix: env.EDGE_REDIS_PREFIX,
      httpUpstreams,
      staticDir: env.EDGE_STATIC_DIR,
    };
  });

/** Parsed edge settings. */
export type EdgeConfig = z.infer<typeof edgeConfigSchema>;
