import { execFile } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { create, type DescFile, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { loadConfig, type ServiceHost } from "@meshmart/kit";
import { file_meshmart_catalog_v1_catalog_service } from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_service_pb.js";
import { Redis } from "ioredis";
import { catalogConfigSchema } from "../../src/config.js";
import { startCatalog } from "../../src/server.js";
import { deleteKeys, uniqueCachePrefix } from "./catalog-fixture.js";
import { createLogSink, type LogSink, openTestEvents, type TestIssuer } from "./kit-testing.js";

/** A catalog served by `startCatalog` on free loopback ports, with its logs in memory. */
export interface RunningCatalog {
  host: ServiceHost;
  logs: LogSink;
  /** The run-unique cache key prefix it was started with. */
  prefix: string;
  /** Closes the host, then deletes its cache keys (when that Redis is reachable). */
  stop(): Promise<void>;
}

/**
 * Starts the real catalog (config parsed exactly as `main` parses it) against `databaseUrl`
 * and `redisUrl`, on port 0 everywhere, with a run-unique cache prefix.
 */
export async function startTestCatalog(options: {
  databaseUrl: string;
  redisUrl: string;
  issuer?: TestIssuer;
  env?: Record<string, string>;
}): Promise<RunningCatalog> {
  const prefix = uniqueCachePrefix("catalog_server");
  const events = await openTestEvents("catalog");
  const config = loadConfig(catalogConfigSchema, {
    SERVICE_NAME: "catalog",
    GRPC_PORT: "0",
    HTTP_PORT: "0",
    ADMIN_PORT: "0",
    LOG_LEVEL: "debug",
    DATABASE_URL: options.databaseUrl,
    REDIS_URL: options.redisUrl,
    CACHE_PREFIX: prefix,
    ...events.env,
    ...options.env,
  });
  const logs = createLogSink();
  const host = await startCatalog(config, {
    logDestination: logs.stream,
    ...(options.issuer === undefined ? {} : { verifier: options.issuer.verifier }),
  });
  return {
    host,
    logs,
    prefix,
    async stop() {
      await host.close();
      await events.close();
      const redis = new Redis(options.redisUrl, {
        lazyConnect: true,
        retryStrategy: () => null,
        maxRetriesPerRequest: 0,
      });
      // connect() rejects on its own; without a listener ioredis also reports the
      // refused connection as an unhandled error event.
      redis.on("error", () => {});
      try {
        await redis.connect();
      } catch {
        redis.disconnect();
        return; // Unreachable Redis (the test meant it): nothing was cached.
      }
      try {
        await deleteKeys(redis, prefix);
      } finally {
        redis.disconnect();
      }
    },
  };
}

const execFileAsync = promisify(execFile);
const bufBinary = new URL("../../../../node_modules/.bin/buf", import.meta.url).pathname;

/** Runs `buf curl` with `args`; resolves with stdout, rejects with stderr in the message. */
export async function bufCurl(args: string[], timeoutMs = 15_000): Promise<string> {
  try {
    const { stdout } = await execFileAsync(bufBinary, ["curl", ...args], { timeout: timeoutMs });
    return stdout;
  } catch (reason) {
    const e = reason as { stderr?: string; message?: string };
    throw new Error(`buf curl ${args.join(" ")} failed: ${e.stderr?.trim() || e.message}`);
  }
}

/**
 * Writes the CatalogService schema (its file and every import, dependencies first) as a
 * binary FileDescriptorSet, for `buf curl --schema` against the HTTP port, which serves no
 * reflection. Built from the generated code, so it is exactly what the server serves.
 */
export async function writeCatalogSchema(dir: string): Promise<string> {
  const ordered: DescFile[] = [];
  const visit = (file: DescFile) => {
    if (ordered.includes(file)) return;
    for (const dep of file.dependencies) visit(dep);
    ordered.push(file);
  };
  visit(file_meshmart_catalog_v1_catalog_service);
  const path = join(dir, "catalog.binpb");
  await writeFile(
    path,
    toBinary(
      FileDescriptorSetSchema,
      create(FileDescriptorSetSchema, { file: ordered.map((f) => f.proto) }),
    ),
  );
  return path;
}
