/**
 * Top functions of a V8 .cpuprofile (from `node --cpu-prof`, e.g. the benchmark's
 * BENCH_CPU_PROF=b): by self time, by inclusive time, and self time summed by package.
 *
 *   node --import tsx bench/tools/cpuprofile-top.ts <file.cpuprofile> [--last <s>] [--top <n>] [--match <re>]
 *
 * --last keeps only the final <s> seconds (the measured run, without start-up and
 * warm-up); --match limits the inclusive list to functions whose name or file match.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    last: { type: "string" },
    top: { type: "string", default: "30" },
    match: { type: "string" },
  },
});
const file = positionals[0];
if (file === undefined) {
  console.error(
    "usage: cpuprofile-top.ts <file.cpuprofile> [--last <s>] [--top <n>] [--match <re>]",
  );
  process.exit(2);
}
const profile = JSON.parse(readFileSync(file, "utf8")) as Profile;
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

function where(url: string): string {
  const nm = url.lastIndexOf("node_modules/");
  if (nm >= 0) return url.slice(nm + "node_modules/".length);
  const m = /\/work\/[^/]+\/(.*)$/.exec(url);
  return m?.[1] ?? (url === "" ? "(native)" : url);
}
function pkg(url: string): string {
  if (url === "") return "(native/VM)";
  if (url.startsWith("node:")) return "node core";
  const nm = url.lastIndexOf("node_modules/");
  if (nm < 0) return url.includes("/services/") ? "meshmart (services/)" : url;
  const rest = url.slice(nm + "node_modules/".length).split("/");
  return rest[0]?.startsWith("@") ? `${rest[0]}/${rest[1]}` : (rest[0] ?? url);
}
const keyOf = new Map<number, string>();
for (const n of profile.nodes) {
  const { functionName, url, lineNumber } = n.callFrame;
  keyOf.set(
    n.id,
    `${functionName || "(anonymous)"}  ${where(url)}${url ? `:${lineNumber + 1}` : ""}`,
  );
}

// Sample timestamps; keep the window asked for.
const times: number[] = [];
let t = profile.startTime;
for (const d of profile.timeDeltas) {
  t += d;
  times.push(t);
}
const from =
  values.last === undefined ? profile.startTime : profile.endTime - Number(values.last) * 1e6;

const self = new Map<string, number>();
const incl = new Map<string, number>();
const pkgs = new Map<string, number>();
let total = 0;
let idle = 0;
for (let i = 0; i < profile.samples.length; i++) {
  if ((times[i] ?? 0) < from) continue;
  const d = profile.timeDeltas[i + 1] ?? 0; // a sample's time runs until the next one
  const id = profile.samples[i] ?? 0;
  const node = byId.get(id);
  if (node === undefined) continue;
  total += d;
  const key = keyOf.get(id) ?? "?";
  if (node.callFrame.functionName === "(idle)") idle += d;
  self.set(key, (self.get(key) ?? 0) + d);
  pkgs.set(pkg(node.callFrame.url), (pkgs.get(pkg(node.callFrame.url)) ?? 0) + d);
  const seen = new Set<string>();
  for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
    const k = keyOf.get(cur) ?? "?";
    if (seen.has(k)) continue;
    seen.add(k);
    incl.set(k, (incl.get(k) ?? 0) + d);
  }
}
const busy = total - idle;
const top = Number(values.top);
const pct = (us: number) => `${((100 * us) / busy).toFixed(1).padStart(5)}%`;
const out = (line: string) => process.stdout.write(`${line}\n`);
out(
  `window ${(total / 1e6).toFixed(1)} s, busy ${(busy / 1e6).toFixed(1)} s (idle ${((100 * idle) / total).toFixed(0)}%); percentages are of busy time`,
);
out(`\ntop ${top} by self time:`);
for (const [k, us] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top)) out(`${pct(us)}  ${k}`);
out("\nself time by package:");
for (const [k, us] of [...pkgs].sort((a, b) => b[1] - a[1]).slice(0, 15)) out(`${pct(us)}  ${k}`);
const re = values.match === undefined ? undefined : new RegExp(values.match);
out(`\ntop ${top} by inclusive time${re ? ` matching ${re}` : ""}:`);
for (const [k, us] of [...incl]
  .filter(([k]) => re === undefined || re.test(k))
  .sort((a, b) => b[1] - a[1])
  .slice(0, top))
  out(`${pct(us)}  ${k}`);
