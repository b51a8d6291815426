/**
 * The local REST edge (`startEdge` from @meshmart/edge), as `make up` runs it, in its
 * own child process for `npm run bench:edge`: one upstream, catalog, at
 * BENCH_CATALOG_GRPC (host:port), no JWKS (GET /v1/products/{id} is public). The access
 * log at info goes to /dev/null through a real file descriptor, like the catalog's.
 */
import { edgeConfigSchema, startEdge } from "@meshmart/edge";
import { loadConfig } from "@meshmart/kit";
import {
  announceReady,
  devNullLogDestination,
  failStart,
  stopOnSignal,
} from "../../catalog/servers/common.js";

try {
  const catalog = process.env.BENCH_CATALOG_GRPC;
  if (catalog === undefined || catalog === "") throw new Error("BENCH_CATALOG_GRPC is not set");
  const config = loadConfig(edgeConfigSchema, {
    EDGE_PORT: "0",
    EDGE_HOST: "127.0.0.1",
    UPSTREAMS: `catalog=${catalog}`,
    LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? "info",
  });
  const edge = await startEdge(config, { logDestination: devNullLogDestination() });
  // `grpc: 0`: the edge has no gRPC port; the runner reads `http`.
  announceReady({ grpc: 0, http: edge.port });
  stopOnSignal(async () => {
    await edge.close();
    return {};
  });
} catch (reason) {
  failStart(reason);
}
