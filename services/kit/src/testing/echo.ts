import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { EchoService } from "../../gen/meshmart/echo/v1/echo_service_pb.js";
import type { Routes } from "../server/service-host.js";

/**
 * The diagnostic echo service: no I/O, optional delay (honouring cancellation) and an
 * optional failure code, so tests and benchmarks exercise exactly the kit's path.
 * `fail_with_code = 2` throws a plain Error, standing in for a bug.
 */
export const echoImpl: ServiceImpl<typeof EchoService> = {
  async echo(req, ctx) {
    if (req.delayMs > 0) await sleep(req.delayMs, undefined, { signal: ctx.signal });
    if (req.failWithCode === Code.Unknown)
      throw new Error(`simulated bug with secret=${req.message}`);
    if (req.failWithCode > 0)
      throw new ConnectError(`asked to fail: ${req.message}`, req.failWithCode as Code);
    return { message: req.message };
  },
  async *echoStream(req) {
    for (let index = 0; index < req.repeat; index++) yield { message: req.message, index };
  },
};

/** Routes serving only the echo service. */
export const echoRoutes: Routes = (router) => {
  router.service(EchoService, echoImpl);
};

export { EchoService };
