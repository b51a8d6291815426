/**
 * (c)/(d) The catalog service, started by its own startCatalog on the database and
 * Redis and NATS the runner prepared (BENCH_DATABASE_URL, BENCH_REDIS_URL, BENCH_NATS_URL, BENCH_CACHE_PREFIX),
 * with the demo catalog seeded. Logs at info go to /dev/null through a real file
 * descriptor.
 */

import { startCatalog } from "@meshmart/catalog";
// Catalog's config schema; its package exports only startCatalog.
import { catalogConfigSchema } from "@meshmart/catalog/config";
import { loadConfig } from "@meshmart/kit";
import {
  announceReady,
  devNullLogDestination,
  failStart,
  serverSettings,
  stopOnSignal,
} from "./common.js";

try {
  const config = loadConfig(catalogConfigSchema, {
    ...serverSettings("catalog"),
    DATABASE_URL: process.env.BENCH_DATABASE_URL,
    REDIS_URL: process.env.BENCH_REDIS_URL,
    CACHE_PREFIX: process.env.BENCH_CACHE_PREFIX,
    NATS_URL: process.env.BENCH_NATS_URL,
    // One namespace for every benchmark run: its streams are reused, never piled up.
    EVENTS_NAMESPACE: "bench",
    SEED_DEMO: "true",
  });
  const host = await startCatalog(config, { logDestination: devNullLogDestination() });
  announceReady({ grpc: host.grpcPort, http: host.httpPort, admin: host.adminPort });
  stopOnSignal(async () => {
    await host.close();
    return {};
  });
} catch (reason) {
  failStart(reason);
}
