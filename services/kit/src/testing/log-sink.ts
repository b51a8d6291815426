import { Writable } from "node:stream";

/** Captured JSON log lines, for asserting what a service logged (and did not). */
export interface LogSink {
  stream: Writable;
  lines(): Record<string, unknown>[];
  text(): string;
}

/** A pino destination that keeps every line in memory. */
export function createLogSink(): LogSink {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk.toString("utf8"));
      callback();
    },
  });
  const text = () => chunks.join("");
  return {
    stream,
    text,
    lines: () =>
      text()
        .split("\n")
        .filter((l) => l.trim() !== "")
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}
