import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  dropDatabase,
  openTestEvents,
  testNatsUrl,
  testPostgresUrl,
  testRedisUrl,
  uniqueName,
} from "@meshmart/kit/testing";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** A `make up` (scripts/up.ts) running catalog and the edge on the test run's infra. */
export interface MakeUp {
  readonly process: ChildProcess;
  /** Everything it printed so far. */
  output(): string;
  /** Kills it if still running, drops its database and its event streams. */
  cleanUp(): Promise<void>;
}

/**
 * Starts `make up`'s script with catalog and the edge, on the test run's Postgres, Redis
 * and NATS under names of its own, every port 0 (the OS picks, `make up` reports: a port
 * chosen here and handed over could be taken by a parallel test before the service binds
 * it), and waits for its `meshmart is up` line. `env` adds settings (MESH=1, …).
 */
export async function startMakeUp(
  label: string,
  env: Record<string, string> = {},
): Promise<MakeUp> {
  const adminUrl = await testPostgresUrl();
  const prefix = uniqueName(label);
  let output = "";
  const up = spawn(
    process.execPath,
    ["--conditions=development", "--import", "tsx", "scripts/up.ts"],
    {
      cwd: ROOT,
      env: {
        ...process.env,
        DATABASE_URL: adminUrl,
        REDIS_URL: await testRedisUrl(),
        NATS_URL: await testNatsUrl(),
        MESHMART_DB_PREFIX: prefix,
        EVENTS_NAMESPACE: prefix,
        MESHMART_SERVICES: "catalog,edge",
        EDGE_PORT: "0",
        EDGE_ADMIN_PORT: "0",
        STOREFRONT_PORT: "0",
        CATALOG_GRPC_PORT: "0",
        CATALOG_HTTP_PORT: "0",
        CATALOG_ADMIN_PORT: "0",
        CATALOG_CACHE_PREFIX: `${prefix}:`,
        NO_COLOR: "1",
        ...env,
      },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  const collect = (chunk: Buffer) => {
    output += chunk.toString();
  };
  up.stdout?.on("data", collect);
  up.stderr?.on("data", collect);
  const makeUp: MakeUp = {
    process: up,
    output: () => output,
    async cleanUp() {
      if (up.exitCode === null && up.signalCode === null) {
        up.kill("SIGKILL");
        await once(up, "exit");
      }
      await dropDatabase(adminUrl, `${prefix}_catalog`);
      const events = await openTestEvents(label, { namespace: prefix });
      await events.close();
    },
  };
  const deadline = Date.now() + 90_000;
  while (!/^meshmart is up/m.test(output)) {
    if (up.exitCode !== null || Date.now() > deadline) {
      await makeUp.cleanUp();
      throw new Error(`make up did not come up:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return makeUp;
}
