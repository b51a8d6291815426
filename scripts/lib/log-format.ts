const LEVEL_NAMES: Record<number, string> = {
  10: "trace",
  20: "debug",
  30: "info",
  40: "warn",
  50: "error",
  60: "fatal",
};

// Fields every line carries; repeating them would bury the message.
const HIDDEN = new Set([
  "level",
  "time",
  "msg",
  "service",
  "pid",
  "hostname",
  "trace_id",
  "span_id",
  "v",
]);
const MAX_VALUE = 160;

/** Options for {@link formatLogLine}. */
export interface FormatOptions {
  /** ANSI colours for the prefix and warn/error levels (when writing to a terminal). */
  color: boolean;
}

/**
 * One line of a service's output, made readable for a terminal: a pino JSON line becomes
 * `[catalog] info  listening grpc=127.0.0.1:9102`, with the error's stack under error
 * lines; anything else is printed as is behind the prefix.
 */
export function formatLogLine(service: string, line: string, options: FormatOptions): string {
  const prefix = options.color ? `\x1b[36m[${service}]\x1b[0m` : `[${service}]`;
  let record: Record<string, unknown>;
  try {
    const parsed: unknown = JSON.parse(line);
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error();
    record = parsed as Record<string, unknown>;
  } catch {
    return `${prefix} ${line}`;
  }
  if (record.msg === undefined && record.status !== undefined && record.grpc_path !== undefined) {
    return `${prefix} ${accessLine(record)}`;
  }
  const level = levelName(record.level);
  const levelText = paint(level.padEnd(5), level, options.color);
  const msg = typeof record.msg === "string" ? record.msg : "";
  const fields: string[] = [];
  let stack: string | undefined;
  for (const [key, value] of Object.entries(record)) {
    if (HIDDEN.has(key) || value === undefined) continue;
    if (key === "err" && typeof value === "object" && value !== null) {
      const err = value as { message?: unknown; stack?: unknown };
      fields.push(`err=${JSON.stringify(String(err.message ?? ""))}`);
      if ((level === "error" || level === "fatal") && typeof err.stack === "string") {
        stack = err.stack
          .split("\n")
          .slice(1, 6)
          .map((l) => `${prefix}     ${l.trim()}`)
          .join("\n");
      }
      continue;
    }
    fields.push(`${key}=${formatValue(value)}`);
  }
  const text = [msg, ...fields].filter((s) => s !== "").join(" ");
  return stack === undefined || stack === ""
    ? `${prefix} ${levelText} ${text}`
    : `${prefix} ${levelText} ${text}\n${stack}`;
}

function levelName(level: unknown): string {
  if (typeof level === "string") return level;
  if (typeof level === "number") return LEVEL_NAMES[level] ?? String(level);
  return "info";
}

function paint(text: string, level: string, color: boolean): string {
  if (!color) return text;
  if (level === "warn") return `\x1b[33m${text}\x1b[0m`;
  if (level === "error" || level === "fatal") return `\x1b[31m${text}\x1b[0m`;
  if (level === "debug" || level === "trace") return `\x1b[2m${text}\x1b[0m`;
  return text;
}

function formatValue(value: unknown): string {
  const text =
    typeof value === "string"
      ? /^[\w.:/@+-]+$/.test(value)
        ? value
        : JSON.stringify(value)
      : JSON.stringify(value);
  return text.length > MAX_VALUE ? `${text.slice(0, MAX_VALUE - 1)}…` : text;
}

/** Envoy's JSON access log line, shortened: `GET /v1/products 200 4ms → catalog`. */
function accessLine(record: Record<string, unknown>): string {
  const text = (key: string) => {
    const value = record[key];
    if (typeof value === "number") return String(value);
    return typeof value === "string" && value !== "-" && value !== "" ? value : undefined;
  };
  const grpc = text("grpc_status");
  const flags = text("response_flags");
  const upstream = text("upstream_cluster");
  return [
    text("method"),
    text("path"),
    text("grpc_path") === text("path")?.split("?")[0] ? undefined : `(${text("grpc_path")})`,
    text("status"),
    grpc === undefined ? undefined : `grpc=${grpc}`,
    `${text("duration_ms") ?? "?"}ms`,
    upstream === undefined ? undefined : `→ ${upstream}`,
    flags === undefined ? undefined : `flags=${flags}`,
    text("request_id") === undefined ? undefined : `id=${text("request_id")}`,
  ]
    .filter((part) => part !== undefined)
    .join(" ");
}
