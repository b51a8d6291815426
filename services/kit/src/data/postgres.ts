import type { Logger } from "pino";
import postgres, { type Sql } from "postgres";
import { Gauge, type Registry } from "prom-client";
import type { DependencyCheck } from "../server/health-monitor.js";

/** A postgres.js pool. */
export type { Sql } from "postgres";

/** Options for {@link createPostgres}. */
export interface PostgresOptions {
  url: string;
  service: string;
  logger: Logger;
  registry?: Registry;
  /** Pool size; postgres.js opens connections lazily up to it. */
  max?: number;
}

/** Seconds before reconnect attempt `retries`: 50 ms doubling to 1 s, with jitter. */
export function reconnectBackoff(retries: number): number {
  return (0.5 + Math.random() / 2) * Math.min(0.05 * 2 ** retries, 1);
}

/**
 * The service's pool on its own database. Connections are opened lazily and recycled,
 * statements are prepared, and every query has a server-side statement_timeout so a
 * stuck query cannot hold a connection past any RPC deadline. The URL is never logged:
 * it can hold a password.
 */
export function createPostgres(options: PostgresOptions): Sql {
  const max = options.max ?? 10;
  const sql = postgres(options.url, {
    max,
    idle_timeout: 30,
    max_lifetime: 60 * 30,
    connect_timeout: 5,
    // postgres.js waits up to 20 s between reconnect attempts once a few have failed, so a
    // service (and the relay's LISTEN) would lag a Postgres restart by that much; retrying a
    // refused connect is cheap, so cap the wait at 1 s.
    backoff: reconnectBackoff,
    connection: {
      application_name: `meshmart-${options.service}`,
      statement_timeout: 10_000,
      idle_in_transaction_session_timeout: 30_000,
    },
    onnotice: (notice) => options.logger.debug({ notice: notice.message }, "postgres notice"),
    types: {
      // int8 as bigint: money in minor units must never round through a double.
      bigint: postgres.BigInt,
    },
  });
  if (options.registry !== undefined) {
    new Gauge({
      name: "db_pool_max_connections",
      help: "Configured size of the Postgres pool.",
      registers: [options.registry],
      collect() {
        this.set(max);
      },
    });
  }
  return sql;
}

/** Health check: the database answers a trivial query. */
export function postgresCheck(sql: Sql, name = "postgres"): DependencyCheck {
  return {
    name,
    critical: true,
    probe: async () => {
      await sql`select 1`;
    },
  };
}
