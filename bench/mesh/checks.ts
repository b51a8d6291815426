/**
 * After the run, what each sidecar pair's own counters and threads say: that the variant is
 * what it claims (mTLS or not, RBAC or not, an access-log line per request), and that every
 * Envoy thread stayed on its core.
 */
import { countLines, sumStats, threadsCpusAllowed } from "../edge/envoy.js";
import type { SidecarPair } from "./sidecars.js";

/** One pair's checks; `problems` empty when all hold. */
export interface PairCheck {
  /** TLS handshakes the client sidecar made (its outbound connections to the server's). */
  handshakes: number;
  /** The TLS version those handshakes negotiated. */
  tlsVersion: string | undefined;
  threads: { client: ThreadsAllowed; server: ThreadsAllowed };
  /** Lines and bytes each sidecar logged (the log variant only). */
  accessLog?: { client: FileSize; server: FileSize };
  changes: string[];
  problems: string[];
}

type ThreadsAllowed = ReturnType<typeof threadsCpusAllowed>;
type FileSize = Awaited<ReturnType<typeof countLines>>;

/**
 * Checks `pair` given what its server sidecar's RBAC allowed during the measured rounds and
 * how many requests went through it in all (warm-up included).
 */
export async function checkPair(
  pair: SidecarPair,
  seen: { rbacAllowed: number; served: number; clientCpu: string; serverCpu: string },
): Promise<PairCheck> {
  const v = pair.variant;
  const problems: string[] = [];
  const stat = (regex: string) => sumStats(pair.client.adminUrl, regex);
  const handshakes = await stat("ssl\\.handshake$");
  const tlsVersion =
    (await stat("ssl\\.versions\\.TLSv1\\.3$")) > 0
      ? "TLSv1.3"
      : (await stat("ssl\\.versions\\.TLSv1\\.2$")) > 0
        ? "TLSv1.2"
        : undefined;
  if (v.mtls !== handshakes > 0) {
    problems.push(
      `${v.id}: the client sidecar made ${handshakes} TLS handshakes, expected ${v.mtls ? "some" : "none"}`,
    );
  }
  if (v.rbac !== seen.rbacAllowed > 0) {
    problems.push(
      `${v.id}: the server sidecar's RBAC allowed ${seen.rbacAllowed} requests, expected ${v.rbac ? "every one" : "none (no filter)"}`,
    );
  }
  const threads = {
    client: threadsCpusAllowed(pair.client.pid),
    server: threadsCpusAllowed(pair.server.pid),
  };
  for (const [side, cpu] of [
    ["client", seen.clientCpu],
    ["server", seen.serverCpu],
  ] as const) {
    if (threads[side].cpus.join(" ") !== cpu) {
      problems.push(
        `${v.id}: ${side} sidecar threads allowed on cpus ${threads[side].cpus.join(" / ")}`,
      );
    }
  }
  const check: PairCheck = { handshakes, tlsVersion, threads, changes: pair.changes, problems };
  if (v.accessLog) {
    const accessLog = {
      client: await countLines(pair.client.stdoutPath),
      server: await countLines(pair.server.stdoutPath),
    };
    for (const side of ["client", "server"] as const) {
      if (accessLog[side].lines < seen.served) {
        problems.push(
          `${v.id}: the ${side} access log has ${accessLog[side].lines} lines for ${seen.served} requests`,
        );
      }
    }
    check.accessLog = accessLog;
  }
  return check;
}
