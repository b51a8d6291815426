import {
  connectNats,
  createEventNames,
  createLogger,
  type EventNames,
  loadConfig,
  type ServiceHost,
} from "@meshmart/kit";
import {
  createLogSink,
  type LogSink,
  openTestEvents,
  type TestIssuer,
  testNatsUrl,
  testRedisUrl,
  uniqueName,
} from "@meshmart/kit/testing";
import { inventoryConfigSchema } from "../../src/config.js";
import { startInventory } from "../../src/server.js";

/** An inventory served by `startInventory` on free loopback ports, with its logs in memory. */
export interface RunningInventory {
  host: ServiceHost;
  logs: LogSink;
  /** The run-unique event names it publishes under. */
  names: EventNames;
  natsUrl: string;
  /** Closes the host, then deletes the run's streams from the shared NATS server. */
  stop(): Promise<void>;
}

/** The environment `main` would see, on port 0 everywhere. */
export function inventoryEnv(
  databaseUrl: string,
  services: { redisUrl: string; natsUrl: string; namespace: string },
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    SERVICE_NAME: "inventory",
    GRPC_PORT: "0",
    HTTP_PORT: "0",
    ADMIN_PORT: "0",
    LOG_LEVEL: "debug",
    DATABASE_URL: databaseUrl,
    REDIS_URL: services.redisUrl,
    NATS_URL: services.natsUrl,
    EVENTS_NAMESPACE: services.namespace,
    ...extra,
  };
}

/**
 * Starts the real inventory (config parsed exactly as `main` parses it) against
 * `databaseUrl`, the test Redis and NATS, under a run-unique event namespace.
 */
export async function startTestInventory(options: {
  databaseUrl: string;
  issuer: TestIssuer;
  env?: Record<string, string>;
}): Promise<RunningInventory> {
  const [redisUrl, natsUrl] = await Promise.all([testRedisUrl(), testNatsUrl()]);
  const namespace = uniqueName("inv");
  const config = loadConfig(
    inventoryConfigSchema,
    inventoryEnv(options.databaseUrl, { redisUrl, natsUrl, namespace }, options.env),
  );
  const logs = createLogSink();
  const host = await startInventory(config, {
    logDestination: logs.stream,
    verifier: options.issuer.verifier,
  });
  const names = createEventNames(namespace);
  return {
    host,
    logs,
    names,
    natsUrl,
    async stop() {
      await host.close();
      await (await openTestEvents("inventory", { natsUrl, namespace })).close();
    },
  };
}

/** Sends a JetStream API request over plain NATS and returns the JSON answer. */
export async function jetStreamApi(
  natsUrl: string,
  subject: string,
): Promise<Record<string, unknown>> {
  const nc = await connectNats({
    url: natsUrl,
    name: "inventory-test",
    logger: createLogger({ service: "inventory-test", level: "silent" }),
  });
  try {
    const reply = await nc.request(`$JS.API.${subject}`, "", { timeout: 5_000 });
    return reply.json<Record<string, unknown>>();
  } finally {
    await nc.close();
  }
}
