import { freePort, isPortOpen } from "@meshmart/kit/testing";

/**
 * A port `make up` listens on: the setting `variable` in `env`, else `fallback`. 0 picks a
 * free port here, since Envoy, Jaeger and Prometheus cannot report the one they got. A
 * value that is no port, or a port already taken, throws a message naming the setting.
 */
export async function chosenPort(
  env: NodeJS.ProcessEnv,
  variable: string,
  fallback: number,
): Promise<number> {
  const value = env[variable];
  const port = value === undefined || value === "" ? fallback : Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`${variable}: not a port: ${value}`);
  }
  if (port === 0) return freePort();
  if (await isPortOpen("127.0.0.1", port)) {
    throw new Error(
      `port ${port} is already in use — another \`make up\`? Move it with ${variable}=<port>`,
    );
  }
  return port;
}
