import type { CallOptions } from "@connectrpc/connect";
import { Registry } from "prom-client";
import { migrate } from "../data/migrations.js";
import { createPostgres, type Sql } from "../data/postgres.js";
import { migrateEventTables } from "../events/outbox.js";
import { createLogger, type Logger } from "../observability/logger.js";
import type { TestIssuer } from "./auth.js";
import { createTestDatabase, type TestDatabase } from "./infra.js";
import { createLogSink, type LogSink } from "./log-sink.js";

/** A service's own database for its tests, set up as the service sets it up at start. */
export interface ServiceTestDatabase {
  db: TestDatabase;
  /** The service's pool (production settings unless `poolMax`). */
  sql: Sql;
  /** The service's logger, writing into `logs`. */
  logger: Logger;
  logs: LogSink;
  /** The registry the pool's metrics are in. */
  registry: Registry;
  /** Ends the pool and drops the database. */
  close(): Promise<void>;
}

/**
 * A fresh database with the service's migrations and the event tables applied, and the
 * service's pool and debug logger on it. A failed migration cleans up before it throws.
 */
export async function openServiceTestDatabase(options: {
  label: string;
  service: string;
  migrations: URL;
  poolMax?: number;
}): Promise<ServiceTestDatabase> {
  const db = await createTestDatabase(options.label);
  const logs = createLogSink();
  const logger = createLogger({
    service: options.service,
    level: "debug",
    destination: logs.stream,
  });
  const registry = new Registry();
  const sql = createPostgres({
    url: db.url,
    service: options.service,
    logger,
    registry,
    ...(options.poolMax === undefined ? {} : { max: options.poolMax }),
  });
  const close = async () => {
    await sql.end({ timeout: 5 });
    await db.drop();
  };
  try {
    await migrate(sql, options.migrations, logger);
    await migrateEventTables(sql, logger);
  } catch (reason) {
    await close();
    throw reason;
  }
  return { db, sql, logger, logs, registry, close };
}

/** Call options carrying a bearer token from `issuer` with `roles`. */
export async function bearer(issuer: TestIssuer, roles: string[]): Promise<CallOptions> {
  return { headers: { authorization: `Bearer ${await issuer.token({ roles })}` } };
}
