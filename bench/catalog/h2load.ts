/** Runs h2load pinned to core 0 and reads its summary and per-request log. */
import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";

/** One h2load invocation. */
export interface H2loadOptions {
  url: string;
  /** The request body (h2load then POSTs it); none for a GET. */
  bodyFile?: string;
  headers: string[];
  h1: boolean;
  connections: number;
  /** Concurrent streams per connection (HTTP/2); 1 for HTTP/1.1 (no pipelining). */
  streams: number;
  durationSeconds: number;
  logFile?: string;
  /** CPU list for taskset. */
  cpu: string;
}

/** What h2load printed, plus latency percentiles from its log file. */
export interface H2loadResult {
  command: string;
  reqPerSec: number;
  finishedSeconds: number;
  total: number;
  succeeded: number;
  failed: number;
  errored: number;
  timeout: number;
  status: { "2xx": number; "3xx": number; "4xx": number; "5xx": number };
  meanMs: number | undefined;
  /** From --log-file: response time (µs) of each request answered with HTTP 200. */
  latenciesUs?: Float64Array;
  /** Requests in the log file whose status was not 200 (-1 = stream failed). */
  logNon200?: number;
  /** CPU seconds (user + system) h2load used, from bash's `time`. */
  cpuSeconds: number | undefined;
  stdout: string;
}

export function h2loadArgs(o: H2loadOptions): string[] {
  return [
    "-c",
    o.cpu,
    "h2load",
    "-t",
    "1",
    "-c",
    String(o.connections),
    "-m",
    String(o.streams),
    "-D",
    String(o.durationSeconds),
    ...(o.bodyFile === undefined ? [] : ["-d", o.bodyFile]),
    ...o.headers.flatMap((h) => ["-H", h]),
    ...(o.h1 ? ["--h1"] : []),
    ...(o.logFile === undefined ? [] : ["--log-file", o.logFile]),
    o.url,
  ];
}

export async function runH2load(o: H2loadOptions): Promise<H2loadResult> {
  const args = h2loadArgs(o);
  const command = ["taskset", ...args].join(" ");
  // bash's `time` reports the exact CPU h2load used (its rusage), on stderr.
  const child = spawn(
    "bash",
    ["-c", 'TIMEFORMAT="h2load-cpu %U %S"; time "$@"', "bash", "taskset", ...args],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => {
    stdout += d;
  });
  child.stderr.setEncoding("utf8").on("data", (d: string) => {
    stderr += d;
  });
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", resolve);
  });
  if (code !== 0) throw new Error(`${command} exited with ${code}\n${stdout}\n${stderr}`);
  const result = parseSummary(stdout, command);
  const cpu = /h2load-cpu ([\d.]+) ([\d.]+)/.exec(stderr);
  result.cpuSeconds = cpu ? Number(cpu[1]) + Number(cpu[2]) : undefined;
  if (o.logFile !== undefined) Object.assign(result, await readLatencies(o.logFile));
  return result;
}

function num(re: RegExp, text: string): number {
  const m = re.exec(text);
  if (m?.[1] === undefined) throw new Error(`h2load output has no match for ${re}:\n${text}`);
  return Number(m[1]);
}

function toMs(value: string, unit: string): number {
  const v = Number(value);
  return unit === "us" ? v / 1000 : unit === "s" ? v * 1000 : v;
}

export function parseSummary(stdout: string, command: string): H2loadResult {
  const mean = /time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)\s/.exec(stdout);
  return {
    command,
    finishedSeconds: num(/finished in ([\d.]+)s/, stdout),
    reqPerSec: num(/finished in [\d.]+s, ([\d.]+) req\/s/, stdout),
    total: num(/requests: (\d+) total/, stdout),
    succeeded: num(/(\d+) succeeded/, stdout),
    failed: num(/(\d+) failed/, stdout),
    errored: num(/(\d+) errored/, stdout),
    timeout: num(/(\d+) timeout/, stdout),
    status: {
      "2xx": num(/(\d+) 2xx/, stdout),
      "3xx": num(/(\d+) 3xx/, stdout),
      "4xx": num(/(\d+) 4xx/, stdout),
      "5xx": num(/(\d+) 5xx/, stdout),
    },
    meanMs: mean?.[1] !== undefined && mean[2] !== undefined ? toMs(mean[1], mean[2]) : undefined,
    cpuSeconds: undefined,
    stdout,
  };
}

/**
 * --log-file rows are tab-separated: start time (µs since epoch), HTTP status (-1 for a
 * failed stream), response time in µs (man h2load).
 */
async function readLatencies(
  path: string,
): Promise<Pick<H2loadResult, "latenciesUs" | "logNon200">> {
  const text = await readFile(path, "utf8");
  const times: number[] = [];
  let non200 = 0;
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const cols = line.split("\t");
    if (cols[1] !== "200") {
      non200++;
      continue;
    }
    times.push(Number(cols[2]));
  }
  return { logNon200: non200, latenciesUs: Float64Array.from(times) };
}

/**
 * Requests of a run that did not end in a 2xx, counted every way h2load reports them, and
 * the line that says which (undefined when there were none).
 */
export function h2loadFailures(h: H2loadResult, phase: string): { count: number; line?: string } {
  const count =
    h.failed +
    h.errored +
    h.timeout +
    h.status["3xx"] +
    h.status["4xx"] +
    h.status["5xx"] +
    (h.logNon200 ?? 0);
  if (count === 0) return { count };
  return {
    count,
    line: `${phase}: h2load ${h.failed} failed, ${h.errored} errored, ${h.timeout} timeout, ${h.status["4xx"]} 4xx, ${h.status["5xx"]} 5xx, ${h.logNon200 ?? 0} non-200 logged`,
  };
}

/** Nearest-rank percentiles (ms) of response times in µs, merged from several runs. */
export function percentiles(runs: Float64Array[]): {
  count: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
} {
  const all = new Float64Array(runs.reduce((n, r) => n + r.length, 0));
  let at = 0;
  for (const r of runs) {
    all.set(r, at);
    at += r.length;
  }
  all.sort();
  const q = (p: number) => (all[Math.max(0, Math.ceil(p * all.length) - 1)] ?? Number.NaN) / 1000;
  return {
    count: all.length,
    p50Ms: q(0.5),
    p90Ms: q(0.9),
    p99Ms: q(0.99),
    maxMs: (all[all.length - 1] ?? Number.NaN) / 1000,
  };
}
