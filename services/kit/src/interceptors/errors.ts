import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { Logger } from "pino";

/**
 * Decides what a client may see of a failure. A ConnectError a handler threw on purpose
 * passes unchanged; anything else (a bug, a driver error, a timeout inside a library) is
 * logged here with its cause and stack, and the client gets a bare INTERNAL so that no
 * SQL, hostnames or secrets leak through error messages.
 */
export function createErrorInterceptor(logger: Logger): Interceptor {
  const mask = (reason: unknown, procedure: string): ConnectError => {
    if (reason instanceof ConnectError && reason.code !== Code.Unknown) return reason;
    logger.error({ err: reason, rpc: procedure }, "unexpected error in handler");
    return new ConnectError("internal error", Code.Internal);
  };
  return (next) => async (req) => {
    try {
      const res = await next(req);
      if (!res.stream) return res;
      return { ...res, message: maskStream(res.message, (e) => mask(e, procedureOf(req))) };
    } catch (reason) {
      throw mask(reason, procedureOf(req));
    }
  };
}

/** `service/Method`, made only when an error is logged. */
function procedureOf(req: { service: { typeName: string }; method: { name: string } }): string {
  return `${req.service.typeName}/${req.method.name}`;
}

async function* maskStream<T>(
  source: AsyncIterable<T>,
  mask: (reason: unknown) => ConnectError,
): AsyncIterable<T> {
  try {
    yield* source;
  } catch (reason) {
    throw mask(reason);
  }
}
