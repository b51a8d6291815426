/**
 * `node web/server/main.ts`: the storefront server. STOREFRONT_DIR (default web/dist),
 * PORT (default 8080), HOST (default 0.0.0.0 in a container, 127.0.0.1 otherwise).
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startStaticServer } from "./static-server.js";

const dir = process.env.STOREFRONT_DIR ?? fileURLToPath(new URL("../dist", import.meta.url));
const port = Number(process.env.PORT ?? 8080);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  process.stderr.write(`PORT must be a port number, got ${process.env.PORT}\n`);
  process.exit(1);
}
try {
  const server = await startStaticServer({ dir, port, host: process.env.HOST ?? "127.0.0.1" });
  process.stdout.write(
    `${JSON.stringify({ level: "info", msg: "storefront listening", port: server.port, dir: join(dir) })}\n`,
  );
  const stop = () => void server.close().then(() => process.exit(0));
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
} catch (reason) {
  process.stderr.write(`${reason instanceof Error ? reason.message : reason}\n`);
  process.exit(1);
}
