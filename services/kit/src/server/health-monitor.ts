import type { Logger } from "pino";

/** One dependency the service needs, probed periodically. */
export interface DependencyCheck {
  name: string;
  /**
   * Critical dependencies decide SERVING vs NOT_SERVING. A non-critical one (a cache)
   * only marks the service degraded: it keeps serving, slower, without it.
   */
  critical: boolean;
  /** Resolves when the dependency answers; rejects (or outlives the timeout) when it does not. */
  probe(signal: AbortSignal): Promise<void>;
}

/** Health of one check as last probed. */
export interface CheckState {
  ok: boolean;
  critical: boolean;
  error?: string;
  since: string;
}

/** Overall verdict. */
export type Verdict = "SERVING" | "NOT_SERVING";

/** Tracks dependency health and tells listeners when the verdict changes. */
export interface HealthMonitor {
  verdict(): Verdict;
  degraded(): boolean;
  report(): { status: Verdict; degraded: boolean; checks: Record<string, CheckState> };
  onChange(listener: (verdict: Verdict) => void): () => void;
  /** Probes everything now; start() awaits one round so a fresh process knows its state. */
  probeAll(): Promise<void>;
  start(): Promise<void>;
  /** NOT_SERVING for good, so load balancers stop sending before we close. */
  shutdown(): void;
}

/** Options for {@link createHealthMonitor}. */
export interface HealthMonitorOptions {
  checks: DependencyCheck[];
  intervalMs: number;
  /** Per-probe limit; a dependency slower than this counts as down. */
  timeoutMs?: number;
  logger: Logger;
}

/**
 * Probes every dependency each `intervalMs` (default 1 s, probe timeout 2 s), so a lost
 * dependency turns the service NOT_SERVING within about three seconds and a returning one
 * turns it back on the next round.
 */
export function createHealthMonitor(options: HealthMonitorOptions): HealthMonitor {
  const timeoutMs = options.timeoutMs ?? Math.min(2_000, options.intervalMs * 2);
  const states = new Map<string, CheckState>();
  const listeners = new Set<(verdict: Verdict) => void>();
  let stopping = false;
  let timer: NodeJS.Timeout | undefined;
  let current: Verdict = "NOT_SERVING";
  const now = () => new Date().toISOString();
  for (const check of options.checks) {
    states.set(check.name, {
      ok: false,
      critical: check.critical,
      error: "not probed yet",
      since: now(),
    });
  }

  const compute = (): Verdict => {
    if (stopping) return "NOT_SERVING";
    for (const state of states.values()) if (state.critical && !state.ok) return "NOT_SERVING";
    return "SERVING";
  };
  const publish = () => {
    const next = compute();
    if (next === current) return;
    current = next;
    options.logger.info({ status: next }, "health changed");
    for (const listener of listeners) listener(next);
  };

  const probeOne = async (check: DependencyCheck) => {
    const controller = new AbortController();
    let timeout: NodeJS.Timeout | undefined;
    const result = await Promise.race([
      check.probe(controller.signal).then(
        () => undefined,
        (e: unknown) => (e instanceof Error ? e.message : String(e)),
      ),
      new Promise<string>((resolve) => {
        timeout = setTimeout(() => resolve(`no answer within ${timeoutMs} ms`), timeoutMs);
      }),
    ]);
    clearTimeout(timeout);
    controller.abort();
    const previous = states.get(check.name);
    const ok = result === undefined;
    if (previous?.ok !== ok) {
      const log = ok
        ? options.logger.info.bind(options.logger)
        : options.logger.warn.bind(options.logger);
      log(
        { dependency: check.name, critical: check.critical, error: result },
        ok ? "dependency up" : "dependency down",
      );
      states.set(check.name, {
        ok,
        critical: check.critical,
        ...(ok ? {} : { error: result }),
        since: now(),
      });
    }
  };

  const probeAll = async () => {
    await Promise.all(options.checks.map(probeOne));
    publish();
  };

  const loop = () => {
    timer = setTimeout(() => {
      void probeAll().finally(() => {
        if (!stopping) loop();
      });
    }, options.intervalMs);
    timer.unref();
  };

  return {
    verdict: () => current,
    degraded: () => [...states.values()].some((s) => !s.critical && !s.ok),
    report: () => ({
      status: current,
      degraded: [...states.values()].some((s) => !s.critical && !s.ok),
      checks: Object.fromEntries(states),
    }),
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    probeAll,
    async start() {
      await probeAll();
      loop();
    },
    shutdown() {
      stopping = true;
      clearTimeout(timer);
      publish();
    },
  };
}
