/**
 * The storefront behind the real Envoy edge: its static server (web/server) serves the
 * files with their types and caching, index.html for client routes, nothing outside the
 * directory; Envoy routes only GET and HEAD of paths the API does not own to it, so REST,
 * Connect/gRPC-Web paths, /openapi.json and /healthz keep their answers even when the site
 * holds files of those names.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { gunzipSync } from "node:zlib";
import { startTestEdge, type TestEdge } from "../../../tests/support/envoy-edge.js";
import { type StaticServer, startStaticServer } from "../static-server.js";
import { isReservedPath } from "../static-site.js";

const INDEX =
  '<!doctype html><title>shop</title><script type="module" src="/assets/app-4f2a.js"></script>';
const APP_JS = `export const big = ${JSON.stringify("x".repeat(5000))};\n`;

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** A raw request: fetch would normalise `..` out of the path and decompress the body. */
function call(
  base: string,
  path: string,
  options: { method?: string; headers?: Record<string, string> } = {},
): Promise<Answer> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: url.hostname,
        port: url.port,
        path,
        method: options.method ?? "GET",
        headers: options.headers ?? {},
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks),
          }),
        );
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end();
  });
}

const isHtml = (a: Answer) => String(a.headers["content-type"]).startsWith("text/html");
/** An error of the edge's (or the site server's) own: google.rpc.Status or Connect JSON. */
const isJsonError = (a: Answer) =>
  a.headers["content-type"] === "application/json" && "code" in JSON.parse(a.body.toString());

describe("the storefront behind Envoy", { timeout: 60_000 }, () => {
  let dir: string;
  let site: string;
  let storefront: StaticServer;
  let edge: TestEdge;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "edge-static-"));
    site = join(dir, "dist");
    mkdirSync(join(site, "assets"), { recursive: true });
    writeFileSync(join(site, "index.html"), INDEX);
    writeFileSync(join(site, "assets", "app-4f2a.js"), APP_JS);
    writeFileSync(join(site, "assets", "app-4f2a.css"), "body{color:red}");
    writeFileSync(join(site, "favicon.svg"), "<svg xmlns='http://www.w3.org/2000/svg'/>");
    writeFileSync(join(site, ".env"), "SECRET=1");
    // Files named like API paths: they must never be what answers.
    writeFileSync(join(site, "healthz"), "static healthz");
    writeFileSync(join(site, "readyz"), "static readyz");
    writeFileSync(join(site, "openapi.json"), '{"static":true}');
    mkdirSync(join(site, "v1"), { recursive: true });
    writeFileSync(join(site, "v1", "products"), "static products");
    mkdirSync(join(site, "meshmart.catalog.v1.CatalogService"), { recursive: true });
    writeFileSync(join(site, "meshmart.catalog.v1.CatalogService", "ListProducts"), "static rpc");
    writeFileSync(join(dir, "secret.txt"), "outside the site");
    symlinkSync(join(dir, "secret.txt"), join(site, "assets", "link.txt"));
    storefront = await startStaticServer({ dir: site, port: 0 });
    // No services: API paths get the edge's answers for absent upstreams.
    edge = await startTestEdge({ services: new Map(), storefrontPort: storefront.port });
  });

  after(async () => {
    await edge?.close();
    await storefront?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("/ is index.html, revalidated, with a strict CSP", async () => {
    const res = await call(edge.url, "/");
    assert.equal(res.status, 200);
    assert.equal(res.headers["content-type"], "text/html; charset=utf-8");
    assert.equal(res.headers["cache-control"], "no-cache");
    assert.equal(res.body.toString(), INDEX);
    assert.match(String(res.headers["content-security-policy"]), /default-src 'self'/);
    assert.match(String(res.headers["content-security-policy"]), /script-src 'self';/);
    assert.equal(res.headers["x-content-type-options"], "nosniff");
    assert.ok(res.headers["x-request-id"], "the edge's request id is set as for every answer");
  });

  test("client routes get index.html; missing files with an extension are 404", async () => {
    for (const path of ["/products/abc", "/orders/1234/", "/cart", "/signin?next=%2Fcheckout"]) {
      const res = await call(edge.url, path);
      assert.equal(res.status, 200, path);
      assert.equal(res.body.toString(), INDEX, path);
    }
    for (const path of ["/assets/app-0000.js", "/missing.png", "/assets/nope"]) {
      const res = await call(edge.url, path);
      assert.equal(res.status, 404, path);
      assert.ok(!isHtml(res), `${path} is not answered with the app's HTML`);
    }
  });

  test("hashed assets: their type and a year of immutable caching; others revalidate", async () => {
    const js = await call(edge.url, "/assets/app-4f2a.js");
    assert.equal(js.status, 200);
    assert.equal(js.headers["content-type"], "text/javascript; charset=utf-8");
    assert.equal(js.headers["cache-control"], "public, max-age=31536000, immutable");
    assert.equal(js.body.toString(), APP_JS);
    const css = await call(edge.url, "/assets/app-4f2a.css");
    assert.equal(css.headers["content-type"], "text/css; charset=utf-8");
    const icon = await call(edge.url, "/favicon.svg");
    assert.equal(icon.headers["content-type"], "image/svg+xml");
    assert.equal(icon.headers["cache-control"], "no-cache");
  });

  test("gzip when accepted, ETag revalidation, HEAD without a body", async () => {
    const zipped = await call(edge.url, "/assets/app-4f2a.js", {
      headers: { "accept-encoding": "gzip, br" },
    });
    assert.equal(zipped.headers["content-encoding"], "gzip");
    assert.equal(zipped.headers.vary, "Accept-Encoding");
    assert.ok(zipped.body.length < APP_JS.length / 10);
    assert.equal(gunzipSync(zipped.body).toString(), APP_JS);

    const first = await call(edge.url, "/");
    const etag = String(first.headers.etag);
    assert.match(etag, /^W\/".+"$/);
    const again = await call(edge.url, "/", { headers: { "if-none-match": etag } });
    assert.equal(again.status, 304);
    assert.equal(again.body.length, 0);

    const head = await call(edge.url, "/assets/app-4f2a.js", { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.equal(Number(head.headers["content-length"]), Buffer.byteLength(APP_JS));
    assert.equal(head.body.length, 0);
  });

  test("nothing outside the directory, and no dot-files", async () => {
    for (const path of [
      "/../secret.txt",
      "/%2e%2e/secret.txt",
      "/assets/..%2f..%2fsecret.txt",
      "/assets/%2e%2e/%2e%2e/secret.txt",
      "/..%5csecret.txt",
      "/.env",
      "/%2eenv",
      "/index.html%00.js",
      "/assets/link.txt",
    ]) {
      const res = await call(edge.url, path);
      assert.notEqual(res.status, 200, path);
      assert.ok(!res.body.toString().includes("outside the site"), path);
      assert.ok(!res.body.toString().includes("SECRET"), path);
    }
  });

  test("the API is never shadowed by the site", async () => {
    const health = await call(edge.url, "/healthz");
    assert.equal(health.status, 200);
    assert.equal(health.body.length, 0, "Envoy's health check, not the file");
    const ready = await call(edge.url, "/readyz");
    assert.ok(!ready.body.toString().includes("static"));
    assert.ok(isJsonError(ready));
    const openapi = await call(edge.url, "/openapi.json");
    assert.equal(openapi.status, 200);
    assert.ok("openapi" in JSON.parse(openapi.body.toString()));
    // A REST route whose upstream is absent: the edge's JSON error, not the file nor the app.
    const products = await call(edge.url, "/v1/products");
    assert.equal(products.status, 503);
    assert.ok(isJsonError(products));
    for (const path of ["/v1/nothing-here", "/v2/products", "/V1/products", "/.well-known/other"]) {
      const unknown = await call(edge.url, path);
      assert.equal(unknown.status, 404, path);
      assert.ok(isJsonError(unknown), path);
    }
    // An RPC path: a GET is a Connect GET (here without an upstream), never a site page.
    const rpcGet = await call(edge.url, "/meshmart.catalog.v1.CatalogService/ListProducts");
    assert.equal(rpcGet.status, 503);
    assert.ok(!rpcGet.body.toString().includes("static rpc"));
    assert.ok(isJsonError(rpcGet));
    // A Connect call goes to the upstream (absent: Unavailable, in Connect's terms).
    const rpc = await call(edge.url, "/meshmart.catalog.v1.CatalogService/ListProducts", {
      method: "POST",
      headers: { "content-type": "application/json", "connect-protocol-version": "1" },
    });
    assert.equal(rpc.status, 503);
    assert.equal(JSON.parse(rpc.body.toString()).code, "unavailable");
    const grpcHealth = await call(edge.url, "/grpc.health.v1.Health/Check");
    assert.ok(!isHtml(grpcHealth));
    assert.notEqual(grpcHealth.status, 200);
    // Only GET and HEAD reach the site: a POST to a client route is the edge's 404 JSON.
    const post = await call(edge.url, "/cart", { method: "POST" });
    assert.equal(post.status, 404);
    assert.deepEqual(JSON.parse(post.body.toString()), { code: 5, message: "not found" });
  });

  test("isReservedPath names the API's paths only", () => {
    for (const p of [
      "/v1",
      "/v1/orders",
      "/healthz",
      "/readyz",
      "/openapi.json",
      "/.well-known/jwks.json",
      "/meshmart.orders.v1.OrderService/WatchOrder",
      "/grpc.health.v1.Health/Check",
    ]) {
      assert.equal(isReservedPath(p), true, p);
    }
    for (const p of ["/", "/orders/1", "/assets/index-abc.js", "/favicon.svg", "/v1x"]) {
      assert.equal(isReservedPath(p), false, p);
    }
  });

  test("a directory without index.html fails the start with a clear message", async () => {
    const empty = mkdtempSync(join(tmpdir(), "edge-static-empty-"));
    try {
      await assert.rejects(
        startStaticServer({ dir: empty, port: 0 }),
        /has no index\.html: build the storefront first/,
      );
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });

  test("with the site's server down, / is the edge's 503 JSON and the API still answers", async () => {
    await storefront.close();
    const res = await call(edge.url, "/");
    assert.equal(res.status, 503);
    assert.ok(isJsonError(res));
    assert.equal((await call(edge.url, "/openapi.json")).status, 200);
  });
});
