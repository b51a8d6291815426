/**
 * (b) The kit's own echo service served exactly as a service is in production:
 * createRuntime (pino logger, prom-client registry with process metrics, OpenTelemetry
 * tracing installed) and serve (the full interceptor chain: tracing, observe/access log,
 * errors, deadline, auth, protovalidate validation) on the grpc-js, Connect and admin
 * ports. Logs at info go to /dev/null through a real file descriptor.
 */
import { createRuntime, kitConfigSchema, loadConfig, serve } from "@meshmart/kit";
import { echoRoutes } from "@meshmart/kit/testing";
import {
  announceReady,
  devNullLogDestination,
  failStart,
  serverSettings,
  stopOnSignal,
} from "./common.js";

try {
  const config = loadConfig(kitConfigSchema, {
    ...serverSettings("bench-echo"),
  });
  const runtime = await createRuntime(config, { logDestination: devNullLogDestination() });
  const host = await serve(runtime, { routes: echoRoutes, checks: [] });
  announceReady({ grpc: host.grpcPort, http: host.httpPort, admin: host.adminPort });
  stopOnSignal(async () => {
    await host.close();
    return {};
  });
} catch (reason) {
  failStart(reason);
}
