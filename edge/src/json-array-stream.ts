/**
 * A server-streaming RPC answered over REST the way Envoy's grpc_json_transcoder does by
 * default: one JSON array that grows as messages arrive (`[` first message, `,` next
 * message, …, `]`), sent with chunked transfer encoding.
 */
import type { ServerResponse } from "node:http";
import type { JsonValue } from "@bufbuild/protobuf";

/**
 * Writes `messages` to `res` as a JSON array. An error before the first message rejects
 * with nothing written, so the caller answers it as any failed call (HTTP status and
 * google.rpc.Status body). After that the status line is out: a failure cuts the
 * response off without its closing `]`, so no client can take a broken stream for a
 * complete one.
 */
export async function sendJsonArrayStream<T>(
  res: ServerResponse,
  messages: AsyncIterable<T>,
  toJson: (message: T) => JsonValue,
): Promise<void> {
  const iterator = messages[Symbol.asyncIterator]();
  let finished = false;
  try {
    const first = await iterator.next();
    res.writeHead(200, {
      "content-type": "application/json",
      // Each change must reach the client when it happens, not when a proxy's buffer fills.
      "cache-control": "no-store",
      "x-accel-buffering": "no",
    });
    if (first.done) {
      finished = true;
      res.end("[]");
      return;
    }
    let prefix = "[";
    let next: IteratorResult<T> = first;
    while (!next.done) {
      if (res.destroyed) return;
      if (!res.write(`${prefix}${JSON.stringify(toJson(next.value))}`)) {
        await drainedOrClosed(res);
        if (res.destroyed) return;
      }
      prefix = ",";
      next = await iterator.next();
    }
    finished = true;
    res.end("]");
  } catch (reason) {
    if (!res.headersSent) throw reason;
    res.destroy();
  } finally {
    if (!finished) await iterator.return?.();
  }
}

/** Resolves once `res` can take more, or is gone (also when it is gone already). */
function drainedOrClosed(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    if (res.destroyed) {
      resolve();
      return;
    }
    const done = () => {
      res.off("drain", done);
      res.off("close", done);
      resolve();
    };
    res.on("drain", done);
    res.on("close", done);
  });
}
