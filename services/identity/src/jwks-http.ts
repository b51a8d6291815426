import type { RequestListener } from "node:http";
import type { Logger } from "@meshmart/kit";
import type { KeyRing } from "./keys.js";

/** Path Envoy's remote_jwks and Istio's RequestAuthentication fetch. */
export const JWKS_PATH = "/.well-known/jwks.json";

/** Plain HTTP `GET /.well-known/jwks.json` (public keys only), cacheable for 60 s; 404 otherwise. */
export function createJwksListener(keys: KeyRing, logger: Logger): RequestListener {
  return (req, res) => {
    const path = new URL(req.url ?? "/", "http://localhost").pathname;
    if (path !== JWKS_PATH || (req.method !== "GET" && req.method !== "HEAD")) {
      res.writeHead(404, { "content-type": "application/json" }).end('{"error":"not found"}');
      return;
    }
    keys.jwks().then(
      (list) => {
        const body = JSON.stringify({ keys: list });
        res.writeHead(200, {
          "content-type": "application/json",
          "cache-control": "public, max-age=60",
        });
        res.end(req.method === "HEAD" ? undefined : body);
      },
      (reason: unknown) => {
        logger.error(
          { err: reason instanceof Error ? reason.message : String(reason) },
          "jwks unavailable",
        );
        res.writeHead(503, { "content-type": "application/json" }).end('{"error":"unavailable"}');
      },
    );
  };
}
