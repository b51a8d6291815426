import { createServer, type Server } from "node:http";
import type { Registry } from "prom-client";
import type { HealthMonitor } from "./health-monitor.js";

/**
 * The admin port, kept off the serving ports so scrapes and probes never queue behind
 * RPCs and the mesh can treat it differently: `/metrics` (Prometheus), `/healthz`
 * (liveness: the process answers), `/readyz` (readiness: SERVING, with each
 * dependency's state as JSON).
 */
export function createAdminServer(registry: Registry, health: HealthMonitor): Server {
  return createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    switch (path) {
      case "/metrics":
        registry.metrics().then(
          (body) => res.writeHead(200, { "content-type": registry.contentType }).end(body),
          () => res.writeHead(500).end(),
        );
        return;
      case "/healthz":
        res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
        return;
      case "/readyz": {
        const report = health.report();
        res
          .writeHead(report.status === "SERVING" ? 200 : 503, {
            "content-type": "application/json",
          })
          .end(`${JSON.stringify(report)}\n`);
        return;
      }
      default:
        res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
    }
  });
}
