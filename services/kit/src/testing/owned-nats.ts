import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ManagedChild } from "./children.js";
import { freePort } from "./free-port.js";
import { startNats } from "./infra.js";

/** A nats-server this process owns, to stop and start again (chaos tests). */
export interface OwnedNats {
  readonly url: string;
  readonly port: number;
  /** Starts it again after stop() or kill(): same port, same JetStream store. */
  start(): Promise<void>;
  /** Clean shutdown (SIGTERM). */
  stop(): Promise<void>;
  /** SIGKILL: a crash, mid-write. */
  kill(): Promise<void>;
  /** Stops it and removes its store. */
  dispose(): Promise<void>;
}

/**
 * Starts nats-server -js on a free loopback port with a temporary store. Installs the
 * Debian package when missing and allowed (root), else fails naming it.
 */
export async function startOwnedNats(
  settings: {
    /** A nats.conf (e.g. with an authorization block) and the environment it reads. */
    config?: { file: string; env: Record<string, string> };
  } = {},
): Promise<OwnedNats> {
  const port = await freePort();
  const storeDir = await mkdtemp(join(tmpdir(), "meshmart-nats-"));
  const options = {
    installMissing: process.getuid?.() === 0,
    log: () => {},
    alternative: "set TEST_NATS_URL to a NATS server with JetStream",
  };
  let child: ManagedChild | undefined = await startNats(port, storeDir, options, settings.config);
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    async start() {
      if (child?.isRunning()) return;
      child = await startNats(port, storeDir, options, settings.config);
    },
    async stop() {
      await child?.stop();
    },
    async kill() {
      if (child?.isRunning()) {
        process.kill(child.pid, "SIGKILL");
        await child.exited;
      }
    },
    async dispose() {
      await child?.stop();
      await rm(storeDir, { recursive: true, force: true });
    },
  };
}
