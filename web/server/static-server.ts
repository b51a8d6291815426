/**
 * The storefront's own HTTP server: web/dist behind the edge, which routes GET and HEAD of
 * every path the API does not own here (locally a process `make up` starts; in the cluster
 * the `storefront` Deployment). Anything the site does not serve is a JSON 404, the shape
 * of every other error at the edge.
 */
import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createStaticSite } from "./static-site.js";

/** Options for {@link startStaticServer}. */
export interface StaticServerOptions {
  /** The storefront's build (holds index.html). */
  dir: string;
  /** 0 picks a free port. */
  port: number;
  host?: string;
}

/** A running storefront server. */
export interface StaticServer {
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

const notFound = JSON.stringify({ code: 5, message: "not found" });

/** Serves `dir` until closed. */
export async function startStaticServer(options: StaticServerOptions): Promise<StaticServer> {
  const site = createStaticSite(options.dir);
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0] ?? "/";
    site.serve(req, res, path).then(
      (served) => {
        if (served) return;
        res.writeHead(404, {
          "content-type": "application/json",
          "content-length": Buffer.byteLength(notFound),
        });
        res.end(req.method === "HEAD" ? undefined : notFound);
      },
      () => {
        if (!res.headersSent) res.writeHead(500, { "content-type": "application/json" });
        res.end(JSON.stringify({ code: 13, message: "internal error" }));
      },
    );
  });
  server.keepAliveTimeout = 65_000;
  server.listen(options.port, options.host ?? "127.0.0.1");
  await once(server, "listening");
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${options.host ?? "127.0.0.1"}:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
