/** /proc readings the orders, events and flash benchmarks share. */
import { readdirSync, readFileSync } from "node:fs";
import { cpuSeconds, MachineMonitor, Sampler } from "../catalog/proc.js";

/** The mesh's service processes: our children running services/<name>/{src/main.ts,dist/src/main.js}. */
export function servicePids(): Map<string, number> {
  const out = new Map<string, number>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid !== process.pid) continue;
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8");
      const m = /services\/([a-z]+)\/(?:dist\/)?src\/main\.[jt]s/.exec(cmdline);
      if (m?.[1] !== undefined) out.set(m[1], Number(entry));
    } catch {
      // The process went away while we looked.
    }
  }
  return out;
}

/** CPU seconds of every process named `comm` (postgres backends, nats-server). */
export function cpuOf(comm: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, "utf8").trim() !== comm) continue;
    } catch {
      continue;
    }
    const cpu = cpuSeconds(Number(entry));
    if (cpu !== undefined) out.set(Number(entry), cpu);
  }
  return out;
}

/**
 * CPU seconds the processes named `comms` use from now until stop(), per name. Processes
 * are shared with anything else on the machine using the same server (other test runs).
 */
export function startInfraCpu(comms: readonly string[]): { stop(): Record<string, number> } {
  const before = comms.map((comm) => [comm, cpuOf(comm)] as const);
  return {
    stop() {
      const used: Record<string, number> = {};
      for (const [comm, start] of before) {
        let seconds = 0;
        // A process born meanwhile (a new Postgres backend) used all its CPU in the interval.
        for (const [pid, cpu] of cpuOf(comm)) seconds += cpu - (start.get(pid) ?? 0);
        used[comm] = seconds;
      }
      return used;
    },
  };
}

/**
 * CPU over the window: each service, Postgres and NATS (all their processes on the box,
 * other runs' included), this runner, and the rest of the machine.
 */
export function startMeshCpu(pids: Map<string, number>) {
  const samplers = [...pids].map(([name, pid]) => [name, new Sampler(pid, 500)] as const);
  const infra = startInfraCpu(["postgres", "nats-server", "redis-server"]);
  const self = process.cpuUsage();
  const machine = new MachineMonitor();
  const began = performance.now();
  return {
    stop() {
      const wall = (performance.now() - began) / 1000;
      const cores: Record<string, number> = {};
      let total = 0;
      for (const [name, s] of samplers) {
        const used = s.stop().cpuSeconds;
        cores[name] = used / wall;
        total += used;
      }
      for (const [comm, used] of Object.entries(infra.stop())) {
        cores[comm] = used / wall;
        total += used;
      }
      const runner = process.cpuUsage(self);
      const runnerSeconds = (runner.user + runner.system) / 1e6;
      cores.runner = runnerSeconds / wall;
      total += runnerSeconds;
      // MachineMonitor already subtracts Postgres, Redis and this runner: pass the rest.
      const infraCounted = ((cores.postgres ?? 0) + (cores["redis-server"] ?? 0)) * wall;
      const load = machine.stop(total - runnerSeconds - infraCounted);
      return {
        wallSeconds: wall,
        cores,
        totalOurs: total,
        othersCores: load.othersCores,
        busyPerCpu: load.busyPerCpu,
      };
    },
  };
}
