import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

/**
 * What BENCH_CPU_PROF preloads into a service: the compiled services run plain node, so
 * this is JavaScript, written next to the profiles. Same-thread inspector sessions answer
 * synchronously, so the profile is taken and written inside 'exit'.
 */
const PROFILER_PRELOAD = `import { mkdirSync, writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import { join } from "node:path";
const dir = process.env.BENCH_CPU_PROF_DIR;
if (dir) {
  const session = new Session();
  session.connect();
  session.post("Profiler.enable");
  session.post("Profiler.start");
  process.on("exit", () => {
    session.post("Profiler.stop", (err, result) => {
      if (err) return;
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, "CPU." + process.pid + ".cpuprofile"), JSON.stringify(result.profile));
    });
  });
}
`;

/**
 * The environment that runs each named service under the CPU profiler, its profile
 * written to `<dir>/<name>/` when the service exits (the mesh stops it with SIGTERM).
 * Node refuses --cpu-prof in NODE_OPTIONS, hence the preload through the inspector.
 */
export async function cpuProfileEnv(
  names: readonly string[],
  dir: string,
): Promise<Record<string, Record<string, string>>> {
  if (names.length === 0) return {};
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "preload.mjs"), PROFILER_PRELOAD);
  const env: Record<string, Record<string, string>> = {};
  for (const name of names) {
    env[name] = {
      NODE_OPTIONS: `--import ${pathToFileURL(join(dir, "preload.mjs")).href}`,
      BENCH_CPU_PROF_DIR: join(dir, name),
    };
  }
  return env;
}
