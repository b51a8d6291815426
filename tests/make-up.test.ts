import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { once } from "node:events";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { isPortOpen, uniqueName } from "@meshmart/kit/testing";
import { toolPath } from "../scripts/lib/tools.js";
import { type MakeUp, startMakeUp } from "./support/make-up.js";

// `make up` end to end: the script the Makefile runs, on the test run's own infra and
// free ports, checked the way the README tells a user to check it.
const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const run = promisify(execFile);
let up: MakeUp;
let ports: { grpc: number; http: number; admin: number; edge: number; envoyAdmin: number };
const requestId = uniqueName("upsmoke-list");
const output = () => up.output();

before(async () => {
  up = await startMakeUp("upsmoke");
  ports = portsOf(
    output()
      .split("\n")
      .find((l) => l.startsWith("meshmart is up")) ?? "",
  );
});

/** The ports the summary line names; every one must be there and real. */
function portsOf(line: string): typeof ports {
  const port = (pattern: RegExp): number => {
    const found = Number(pattern.exec(line)?.[1]);
    assert.ok(found > 0, `${pattern} in ${JSON.stringify(line)}`);
    return found;
  };
  return {
    edge: port(/REST http:\/\/127\.0\.0\.1:(\d+)/),
    envoyAdmin: port(/Envoy admin http:\/\/127\.0\.0\.1:(\d+)/),
    grpc: port(/catalog grpc 127\.0\.0\.1:(\d+)/),
    http: port(/catalog grpc [^;]*connect http:\/\/127\.0\.0\.1:(\d+)/),
    admin: port(/catalog grpc [^;]*, admin http:\/\/127\.0\.0\.1:(\d+)/),
  };
}

after(async () => {
  await up?.cleanUp();
});

test("prints one 'meshmart is up' line naming the REST and catalog URLs", () => {
  const lines = output()
    .split("\n")
    .filter((l) => l.startsWith("meshmart is up"));
  assert.equal(lines.length, 1);
  // portsOf found five distinct, real ports in it.
  assert.equal(new Set(Object.values(ports)).size, 5, JSON.stringify(ports));
});

test("grpcurl lists CatalogService and Health through reflection", async () => {
  const { stdout } = await run(toolPath("grpcurl"), [
    "-plaintext",
    `127.0.0.1:${ports.grpc}`,
    "list",
  ]);
  assert.match(stdout, /^meshmart\.catalog\.v1\.CatalogService$/m);
  assert.match(stdout, /^grpc\.health\.v1\.Health$/m);
});

test("a seeded product comes back over gRPC and over Connect JSON", async () => {
  const list = await fetch(
    `http://127.0.0.1:${ports.http}/meshmart.catalog.v1.CatalogService/ListProducts`,
    {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ pageSize: 100 }),
    },
  );
  assert.equal(list.status, 200);
  const { products } = (await list.json()) as { products: { id: string; name: string }[] };
  assert.ok(products.length >= 50, `demo catalog seeded (${products.length})`);
  const product = products[0];
  assert.ok(product);

  const { stdout } = await run(
    join(ROOT, "node_modules/.bin/buf"),
    [
      "curl",
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      "-d",
      JSON.stringify({ product_id: product.id }),
      `http://127.0.0.1:${ports.grpc}/meshmart.catalog.v1.CatalogService/GetProduct`,
    ],
    { cwd: ROOT },
  );
  assert.equal((JSON.parse(stdout) as { product: { name: string } }).product.name, product.name);

  const connect = await fetch(
    `http://127.0.0.1:${ports.http}/meshmart.catalog.v1.CatalogService/GetProduct`,
    {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ productId: product.id }),
    },
  );
  assert.equal(((await connect.json()) as { product: { id: string } }).product.id, product.id);
});

test("Envoy is the edge: it serves the catalog over REST and logs the request", async () => {
  const res = await fetch(`http://127.0.0.1:${ports.edge}/v1/products?page_size=2`, {
    headers: { "x-request-id": requestId },
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("server"), "envoy");
  const body = (await res.json()) as { products: unknown[]; nextPageToken: string };
  assert.equal(body.products.length, 2);
  assert.ok(body.nextPageToken.length > 0);
  // Envoy's access log is part of make up's output, like every service's log. Waited for
  // by its own line: catalog's log of the same call ("request_id=…") comes first and would
  // also contain "id=<request id>".
  const accessLine = new RegExp(
    `^\\[edge\\] GET /v1/products\\?page_size=2 .*200 .*id=${requestId}`,
    "m",
  );
  const deadline = Date.now() + 5_000;
  while (!accessLine.test(output()) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.match(output(), accessLine);
  const ready = await fetch(`http://127.0.0.1:${ports.envoyAdmin}/ready`);
  assert.equal(await ready.text(), "LIVE\n");
});

test("the edge serves the storefront at / and names it in the summary", async () => {
  const summary =
    output()
      .split("\n")
      .find((l) => l.startsWith("meshmart is up")) ?? "";
  assert.match(summary, new RegExp(`storefront http://127\\.0\\.0\\.1:${ports.edge}/`));
  const res = await fetch(`http://127.0.0.1:${ports.edge}/`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/html/);
  assert.match(await res.text(), /<script type="module"/);
});

test("Ctrl-C stops everything cleanly with exit 0", async () => {
  up.process.kill("SIGINT");
  const [code] = (await once(up.process, "exit")) as [number | null];
  assert.equal(code, 0, output().slice(-2000));
  for (const port of Object.values(ports)) {
    assert.equal(await isPortOpen("127.0.0.1", port), false, `port ${port} released`);
  }
});
