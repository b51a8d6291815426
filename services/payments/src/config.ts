import { eventConfigFields, kitConfigSchema } from "@meshmart/kit";
import { z } from "zod";

const serviceAccounts = z
  .string()
  .transform((v) =>
    v
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s !== ""),
  )
  .pipe(z.array(z.string().regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/)).min(1));

/** Payments' settings: the kit's plus its database, events, the caller policy and the fake PSP. */
export const paymentsConfigSchema = kitConfigSchema.extend({
  ...eventConfigFields,
  DATABASE_URL: z.string().regex(/^postgres(ql)?:\/\//, "must be a postgres:// URL"),
  /** Unused by payments itself; the kit's service data (and its health check) opens it. */
  REDIS_URL: z.string().regex(/^rediss?:\/\//, "must be a redis:// URL"),
  /**
   * How payments learns which workload called it (see peer.ts). `xfcc`: from the Istio
   * sidecar's x-forwarded-client-cert header (set in a cluster). `off`: no peer identity;
   * every caller that reaches the port counts as a mesh peer, which is only right for
   * local runs bound to loopback.
   */
  MESH_PEER_IDENTITY: z.enum(["xfcc", "off"]).default("off"),
  /** Service accounts that may call RefundPayment without role admin (comma-separated). */
  REFUND_SERVICE_ACCOUNTS: serviceAccounts.default(["orders"]),
  /** Delay the fake card processor adds to every call, to make crash windows observable. */
  FAKE_PSP_LATENCY_MS: z.coerce.number().int().min(0).max(60_000).default(0),
});

/** Parsed payments settings. */
export type PaymentsConfig = z.infer<typeof paymentsConfigSchema>;
