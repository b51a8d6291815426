import { connect, type NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import type { DependencyCheck } from "../server/health-monitor.js";

/** Options for {@link connectNats}. */
export interface ConnectNatsOptions {
  /** `nats://host:4222`, or a comma-separated list of a cluster's seeds; may carry credentials. */
  url: string;
  /** Connection name the server shows in its monitoring (the service name). */
  name: string;
  logger: Logger;
}

/**
 * Connects to NATS and keeps the connection for the life of the process: after a loss
 * it reconnects forever (every 2 s, jittered), while the outbox keeps the events that
 * could not be published and consumers resume where their durable left off. The first
 * connection must succeed, as for Postgres: a service that cannot reach NATS at start
 * fails its start instead of serving without ever having created its streams.
 * Status changes are logged with the server's host:port only, never credentials.
 */
export async function connectNats(options: ConnectNatsOptions): Promise<NatsConnection> {
  const listed = options.url
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  const servers = listed.map(safeNatsUrl);
  let nc: NatsConnection;
  try {
    nc = await connect({
      servers,
      ...credentialsOf(listed),
      name: options.name,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 2_000,
      // Pings find a silently dead server (a partitioned pod) within about a minute.
      pingInterval: 20_000,
      maxPingOut: 3,
      timeout: 5_000,
      // Otherwise every request (each JetStream publish and ack wait) builds two Error
      // objects up front, stack traces included, in case it fails: 1–2 % of a relaying
      // service's CPU. A failure still says what timed out; only the caller's frames go.
      noAsyncTraces: true,
    });
  } catch (reason) {
    const message = reason instanceof Error ? reason.message : String(reason);
    throw new Error(`cannot connect to NATS at ${servers.join(",")}: ${message}`);
  }
  void watchStatus(nc, options.logger);
  return nc;
}

async function watchStatus(nc: NatsConnection, logger: Logger): Promise<void> {
  let down = false;
  for await (const status of nc.status()) {
    switch (status.type) {
      case "disconnect":
        if (!down) logger.warn({ server: safeNatsUrl(status.server) }, "nats disconnected");
        down = true;
        break;
      case "reconnect":
        logger.info({ server: safeNatsUrl(status.server) }, "nats reconnected");
        down = false;
        break;
      case "error":
        logger.warn({ err: status.error.message }, "nats error");
        break;
      case "ldm":
        // The server is entering lame-duck mode (rolling restart): we move on our own.
        logger.info({ server: safeNatsUrl(status.server) }, "nats server shutting down");
        break;
      case "slowConsumer":
        logger.warn({ pending: status.pending }, "nats slow consumer");
        break;
      default:
        break;
    }
  }
}

/**
 * `user:password@` (or a bare `token@`) in a NATS URL, as the other URLs carry theirs
 * (DATABASE_URL, REDIS_URL). nats.js ignores credentials in server URLs, so they are
 * passed as options; every URL in the list must carry the same ones.
 */
function credentialsOf(urls: readonly string[]): { user?: string; pass?: string; token?: string } {
  const found = new Set<string>();
  for (const url of urls) {
    const match = /^(?:[a-z]+:\/\/)?([^@/]*)@/.exec(url);
    found.add(match?.[1] ?? "");
  }
  if (found.size > 1) throw new Error("NATS_URL: every server must carry the same credentials");
  const [userinfo = ""] = found;
  if (userinfo === "") return {};
  const colon = userinfo.indexOf(":");
  if (colon === -1) return { token: decodeURIComponent(userinfo) };
  return {
    user: decodeURIComponent(userinfo.slice(0, colon)),
    pass: decodeURIComponent(userinfo.slice(colon + 1)),
  };
}

/** A server address without credentials, for logs and errors. */
export function safeNatsUrl(server: string): string {
  return server.replace(/^([a-z]+:\/\/)?[^@/]*@/, "$1");
}

/**
 * Health check for NATS: the connection is up and the server answers a ping. Not
 * critical: while NATS is away the outbox buffers events and consumers wait, so the
 * service keeps serving its RPCs, degraded.
 */
export function natsCheck(nc: NatsConnection, name = "nats"): DependencyCheck {
  return {
    name,
    critical: false,
    probe: async () => {
      await nc.rtt();
    },
  };
}

/** Whether the connected server's version is at least `min` (`major.minor.patch`). */
export function serverAtLeast(nc: NatsConnection, min: string): boolean {
  const version = nc.info?.version;
  if (version === undefined) return false;
  const have = version.split(/[.-]/).map((p) => Number.parseInt(p, 10));
  const want = min.split(".").map((p) => Number.parseInt(p, 10));
  for (let i = 0; i < want.length; i++) {
    const a = have[i] ?? 0;
    const b = want[i] ?? 0;
    if (Number.isNaN(a) || a !== b) return !Number.isNaN(a) && a > b;
  }
  return true;
}
