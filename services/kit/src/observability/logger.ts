import { trace } from "@opentelemetry/api";
import { type DestinationStream, type Logger, pino } from "pino";

/** The structured logger every kit module takes; a pino Logger. */
export type { Logger } from "pino";

/**
 * Paths pino blanks wherever they appear. Request bodies are never logged, but
 * errors and config objects can carry these, and a censored line beats a leaked one.
 */
const redactPaths = [
  "password",
  "*.password",
  "token",
  "*.token",
  "access_token",
  "refresh_token",
  "*.accessToken",
  "*.refreshToken",
  "authorization",
  "*.authorization",
  "headers.authorization",
  "card",
  "*.card",
  "cardNumber",
  "*.cardNumber",
  "number",
  "cvc",
  "*.cvc",
  "secret",
  "*.secret",
  "DATABASE_URL",
  "*.DATABASE_URL",
];

/** Longest a log line waits in the batch buffer. */
export const LOG_FLUSH_MS = 100;

/**
 * Where a service's log lines go: a file descriptor (stdout by default), written
 * asynchronously in batches of up to 4 KiB. Writing each line on its own costs a syscall
 * per RPC, more than formatting the line. A quiet service must not hold its last lines
 * (the "listening" line that `make up` and tests wait for), so whatever is buffered is
 * written at least every {@link LOG_FLUSH_MS}. Buffered lines are flushed on exit,
 * including a crash's.
 */
export function createLogDestination(fd = 1): DestinationStream {
  const destination = pino.destination({ dest: fd, sync: false, minLength: 4096 });
  // sonic-boom keeps the buffered byte count in `_len`; reading it avoids a 0-byte write
  // per tick on an idle service (if it ever disappears, every tick flushes: still correct).
  const buffered = () => (destination as unknown as { _len?: number })._len ?? 1;
  const flusher = setInterval(() => {
    try {
      if (buffered() > 0) destination.flush();
    } catch {
      // Closed or not ready: the exit flush below is the last word.
    }
  }, LOG_FLUSH_MS);
  flusher.unref();
  process.once("exit", () => {
    try {
      destination.flushSync();
    } catch {
      // Nothing left to do with a log line we cannot write while exiting.
    }
  });
  return destination;
}

/** Options for {@link createLogger}. */
export interface LoggerOptions {
  service: string;
  level?: string;
  /** Where lines go; stdout by default. Tests pass a sink to assert on lines. */
  destination?: DestinationStream;
  /**
   * Censor secret-looking keys (default). The access log turns it off: its lines have a
   * fixed set of fields, none secret, and redaction is the costliest part of a line.
   */
  redact?: boolean;
}

/**
 * JSON logger stamped with the service name and, for lines written inside a span,
 * that span's trace_id and span_id so logs and traces join.
 */
export function createLogger(options: LoggerOptions): Logger {
  return pino(
    {
      level: options.level ?? "info",
      base: { service: options.service },
      messageKey: "msg",
      // Epoch milliseconds (pino's default): formatting an ISO date costs more than the
      // rest of an access-log line; `make up` prints it readably.
      formatters: { level: (label) => ({ level: label }) },
      ...(options.redact === false ? {} : { redact: { paths: redactPaths, censor: "[redacted]" } }),
      mixin() {
        const span = trace.getActiveSpan();
        if (span === undefined) return {};
        const { traceId, spanId } = span.spanContext();
        return { trace_id: traceId, span_id: spanId };
      },
    },
    options.destination ?? createLogDestination(),
  );
}
