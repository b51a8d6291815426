import { spawn } from "node:child_process";
import { constants } from "node:fs";
import { access, readdir } from "node:fs/promises";
import { delimiter, join } from "node:path";

// Debian installs daemons in sbin, which a non-login or non-root PATH often lacks.
const EXTRA_DIRS = ["/usr/local/sbin", "/usr/sbin", "/sbin"];

/** The absolute path of an executable on PATH (or in the sbin dirs), or undefined. */
export async function findExecutable(name: string): Promise<string | undefined> {
  const dirs = [...(process.env.PATH ?? "").split(delimiter).filter(Boolean), ...EXTRA_DIRS];
  for (const dir of dirs) {
    const candidate = join(dir, name);
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not here.
    }
  }
  return undefined;
}

/** Options for {@link ensureExecutable}. */
export interface EnsureExecutableOptions {
  /** Install with apt-get when missing (only possible as root on a Debian-family system). */
  installMissing: boolean;
  log: (line: string) => void;
  /** What else the user can do instead, appended to the error, e.g. "or set REDIS_URL". */
  alternative?: string;
}

/**
 * The path of `name`, installing Debian package `debPackage` first when it is missing and
 * that is allowed and possible. Otherwise throws an error that says exactly what to install.
 */
export async function ensureExecutable(
  name: string,
  debPackage: string,
  options: EnsureExecutableOptions,
): Promise<string> {
  const found = await findExecutable(name);
  if (found !== undefined) return found;
  const aptGet = await findExecutable("apt-get");
  const isRoot = process.getuid?.() === 0;
  if (options.installMissing && isRoot && aptGet !== undefined) {
    options.log(`${name}: not installed; installing Debian package ${debPackage} with apt-get…`);
    await aptInstall(aptGet, debPackage, options.log);
    const installed = await findExecutable(name);
    if (installed !== undefined) return installed;
    throw new Error(`apt-get installed ${debPackage} but ${name} is still not on PATH`);
  }
  const how = isRoot ? "apt-get install -y" : "sudo apt-get install -y";
  const alternative = options.alternative === undefined ? "" : `, ${options.alternative}`;
  throw new Error(
    `${name} is not installed (not found on PATH). Install the Debian package: \`${how} ${debPackage}\`${alternative}.`,
  );
}

async function aptInstall(aptGet: string, debPackage: string, log: (line: string) => void) {
  const install = (): Promise<number> =>
    run(aptGet, ["install", "-y", "--no-install-recommends", debPackage], log);
  const update = async (): Promise<void> => {
    const code = await run(aptGet, ["update"], log);
    if (code !== 0) throw new Error(`apt-get update failed (exit ${code})`);
  };
  // A fresh container image ships without package lists; install cannot find anything then.
  if (!(await hasPackageLists())) await update();
  if ((await install()) === 0) return;
  // Stale lists point at versions the mirror no longer has: refresh once and retry.
  await update();
  const code = await install();
  if (code !== 0) throw new Error(`apt-get install ${debPackage} failed (exit ${code})`);
}

async function hasPackageLists(): Promise<boolean> {
  try {
    const files = await readdir("/var/lib/apt/lists");
    return files.some((f) => f.endsWith("_Packages") || f.includes("_Packages."));
  } catch {
    return false;
  }
}

function run(command: string, args: string[], log: (line: string) => void): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(command, args, {
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    for (const stream of [child.stdout, child.stderr]) {
      let buffered = "";
      stream.setEncoding("utf8");
      stream.on("data", (chunk: string) => {
        buffered += chunk;
        const lines = buffered.split(/\r?\n/);
        buffered = lines.pop() ?? "";
        for (const line of lines) if (line.trim() !== "") log(`  apt: ${line}`);
      });
    }
    child.once("error", (error) => {
      log(`  apt: ${error.message}`);
      resolve(127);
    });
    child.once("close", (code) => resolve(code ?? 1));
  });
}
