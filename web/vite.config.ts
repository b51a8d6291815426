/**
 * The storefront's build: `vite build` writes web/dist, which web/server serves behind the
 * edge at `/`. `vite` (dev) proxies the API to a running edge (`make up`, or
 * MESHMART_EDGE_URL) so the page and its calls stay same-origin, as in production.
 */
import { defaultClientConditions, defineConfig } from "vite";

const edge = process.env.MESHMART_EDGE_URL ?? "http://127.0.0.1:8080";

export default defineConfig({
  root: new URL(".", import.meta.url).pathname,
  // The kit's generated code is TypeScript under the "development" condition; no kit build.
  resolve: { conditions: ["development", ...defaultClientConditions] },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    // One small bundle; no inline scripts (the edge's CSP forbids them).
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    reportCompressedSize: false,
  },
  server: {
    proxy: {
      // Connect/gRPC-Web calls are POSTs to /package.Service/Method.
      "^/meshmart\\.": { target: edge, changeOrigin: false },
    },
  },
});
