/** The admin the benchmarks' identity bootstraps, to create products and set stock. */
export const BENCH_ADMIN = { email: "bench-admin@example.com", password: "bench admin password" };

/**
 * Per-service settings every order benchmark starts the mesh with: identity bootstraps
 * {@link BENCH_ADMIN} and issues hour-long tokens; inventory gives new products no stock
 * of its own (the run sets it with SetStock).
 */
export function benchServiceEnv(): Record<string, Record<string, string>> {
  return {
    identity: {
      IDENTITY_BOOTSTRAP_ADMIN_EMAIL: BENCH_ADMIN.email,
      IDENTITY_BOOTSTRAP_ADMIN_PASSWORD: BENCH_ADMIN.password,
      ACCESS_TOKEN_TTL_S: "3600",
    },
    inventory: { INITIAL_STOCK_ON_PRODUCT_CREATED: "0" },
  };
}
