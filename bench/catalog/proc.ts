/** /proc readings: a process's RSS, CPU time and CPU affinity. */
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { availableParallelism } from "node:os";

// USER_HZ; 100 on every Linux configuration Node supports.
const TICKS_PER_SECOND = 100;

function status(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/status`, "utf8");
  } catch {
    return undefined;
  }
}

function statusField(pid: number, field: string): string | undefined {
  const m = new RegExp(`^${field}:\\s*(.+)$`, "m").exec(status(pid) ?? "");
  return m?.[1]?.trim();
}

/** Resident set size in MB (VmRSS), undefined when the process is gone. */
export function rssMb(pid: number): number | undefined {
  const v = statusField(pid, "VmRSS");
  return v === undefined ? undefined : Number.parseInt(v, 10) / 1024;
}

/** Peak resident set size since the process started (VmHWM), in MB. */
export function hwmMb(pid: number): number | undefined {
  const v = statusField(pid, "VmHWM");
  return v === undefined ? undefined : Number.parseInt(v, 10) / 1024;
}

/** The CPUs the process may run on, e.g. "1". */
export function cpusAllowed(pid: number): string | undefined {
  return statusField(pid, "Cpus_allowed_list");
}

/** User + system CPU seconds the process (all its threads) has used. */
export function cpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the ")" closing comm; utime and stime are fields 14 and 15.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(rest[11]) + Number(rest[12])) / TICKS_PER_SECOND;
  } catch {
    return undefined;
  }
}

/** Samples a process every `intervalMs` while running: peak RSS and CPU used. */
export class Sampler {
  peakRssMb = 0;
  samples = 0;
  private readonly timer: NodeJS.Timeout;
  private readonly startCpu: number;
  private lastCpu: number;
  private readonly started = performance.now();

  constructor(
    private readonly pid: number,
    intervalMs = 100,
  ) {
    this.startCpu = cpuSeconds(pid) ?? 0;
    this.lastCpu = this.startCpu;
    this.timer = setInterval(() => this.sample(), intervalMs);
    this.sample();
  }

  private sample(): void {
    const rss = rssMb(this.pid);
    if (rss !== undefined) {
      this.peakRssMb = Math.max(this.peakRssMb, rss);
      this.samples++;
    }
    this.lastCpu = cpuSeconds(this.pid) ?? this.lastCpu;
  }

  /** Stops sampling: peak RSS, and the CPU seconds used and wall seconds elapsed. */
  stop(): { peakRssMb: number; samples: number; cpuSeconds: number; wallSeconds: number } {
    this.sample();
    clearInterval(this.timer);
    return {
      peakRssMb: this.peakRssMb,
      samples: this.samples,
      cpuSeconds: this.lastCpu - this.startCpu,
      wallSeconds: (performance.now() - this.started) / 1000,
    };
  }
}

/** Busy (user+nice+system+irq+softirq), steal and total ticks per CPU, from /proc/stat. */
function cpuTicks(): Map<string, { busy: number; steal: number; total: number }> {
  const out = new Map<string, { busy: number; steal: number; total: number }>();
  for (const line of readFileSync("/proc/stat", "utf8").split("\n")) {
    const m = /^(cpu\d+)\s+(.*)$/.exec(line);
    if (m?.[1] === undefined || m[2] === undefined) continue;
    const v = m[2].split(/\s+/).map(Number);
    const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] =
      v;
    const busy = user + nice + system + irq + softirq;
    out.set(m[1], { busy, steal, total: busy + steal + idle + iowait });
  }
  return out;
}

/** CPU seconds used so far by every process whose name (comm) is one of `names`. */
function cpuByName(names: readonly string[]): Map<number, number> {
  const out = new Map<number, number>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    let comm: string;
    try {
      comm = readFileSync(`/proc/${pid}/comm`, "utf8").trim();
    } catch {
      continue;
    }
    if (!names.includes(comm)) continue;
    const cpu = cpuSeconds(pid);
    if (cpu !== undefined) out.set(pid, cpu);
  }
  return out;
}

/** The services the catalog calls; their CPU is part of the work, not noise. */
const DEPENDENCIES = ["redis-server", "postgres"] as const;

/**
 * Whole-machine CPU over an interval: busy fraction per CPU, and how much of the
 * machine went to processes other than the ones given (another build or test run on the
 * same box makes the figures worthless, so the runner flags it).
 */
export class MachineMonitor {
  private readonly start = cpuTicks();
  private readonly startedAt = performance.now();
  private readonly selfStart = process.cpuUsage();
  private readonly depsStart = cpuByName(DEPENDENCIES);

  stop(ourCpuSeconds: number): {
    busyPerCpu: Record<string, number>;
    othersCores: number;
    stealCores: number;
    dependencyCores: number;
  } {
    const end = cpuTicks();
    const wall = (performance.now() - this.startedAt) / 1000;
    const busyPerCpu: Record<string, number> = {};
    let busyTotal = 0;
    let steal = 0;
    for (const [cpu, e] of end) {
      const s = this.start.get(cpu);
      if (s === undefined) continue;
      const busy = (e.busy - s.busy) / TICKS_PER_SECOND;
      busyTotal += busy;
      steal += (e.steal - s.steal) / TICKS_PER_SECOND;
      busyPerCpu[cpu] = Math.min(1, busy / wall);
    }
    const self = process.cpuUsage(this.selfStart);
    const runner = (self.user + self.system) / 1e6;
    let deps = 0;
    for (const [pid, cpu] of cpuByName(DEPENDENCIES))
      deps += cpu - (this.depsStart.get(pid) ?? cpu);
    return {
      busyPerCpu,
      othersCores: Math.max(0, (busyTotal - ourCpuSeconds - runner - deps) / wall),
      stealCores: steal / wall,
      dependencyCores: deps / wall,
    };
  }
}

/** Fraction of the machine busy over `ms` (a quietness check before measuring). */
export async function machineBusy(ms: number): Promise<number> {
  const a = cpuTicks();
  await new Promise((r) => setTimeout(r, ms));
  const b = cpuTicks();
  let busy = 0;
  let total = 0;
  for (const [cpu, e] of b) {
    const s = a.get(cpu);
    if (s === undefined) continue;
    busy += e.busy - s.busy;
    total += e.total - s.total;
  }
  return total > 0 ? busy / total : 0;
}

/**
 * Measures {@link machineBusy} over a second before a run, says it, and adds a warning when
 * more than 10 % of the machine was busy with other work. Returns the busy fraction.
 */
export async function checkMachineQuiet(
  say: (line: string) => void,
  warnings: string[],
): Promise<number> {
  const busy = await machineBusy(1000);
  say(`machine busy before the run: ${(busy * 100).toFixed(0)}% of ${availableParallelism()} cpus`);
  if (busy > 0.1) warnings.push(`before the run the machine was ${(busy * 100).toFixed(0)}% busy`);
  return busy;
}

/** Pins every thread of this process (the runner, and h2load it spawns) to `cpu`. */
export function pinSelf(cpu: string): void {
  spawnSync("taskset", ["-a", "-p", "-c", cpu, String(process.pid)], { stdio: "ignore" });
}
