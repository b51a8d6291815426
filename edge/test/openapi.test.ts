/**
 * The committed OpenAPI document: valid OpenAPI 3.1, not stale against proto/, and the
 * bindings the REST contract relies on; and the same bytes as Envoy serves them.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { Validator } from "@seriousme/openapi-schema-validator";
import { startTestEdge, type TestEdge } from "../../tests/support/envoy-edge.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const DOC_PATH = join(ROOT, "edge/openapi/meshmart.openapi.json");

type Json = Record<string, unknown>;
type Operation = {
  operationId: string;
  security?: Json[];
  requestBody?: Json;
  parameters?: { name: string; in: string; required?: boolean; schema: Json }[];
  responses: Record<string, { content: Record<string, { schema: Json }> }>;
};
type Doc = { paths: Record<string, Record<string, Operation>>; security: Json[] };

const text = readFileSync(DOC_PATH, "utf8");
const doc = JSON.parse(text) as Doc;

function op(path: string, method: string): Operation {
  const o = doc.paths[path]?.[method];
  assert.ok(o, `${method.toUpperCase()} ${path} is in the document`);
  return o;
}

describe("OpenAPI document", () => {
  it("is valid OpenAPI 3.1", async () => {
    const validator = new Validator();
    const result = await validator.validate(structuredClone(doc));
    if (!result.valid) console.error(JSON.stringify(result.errors, null, 2));
    assert.equal(result.valid, true);
    assert.equal(validator.version, "3.1");
  });

  it("is not stale: buf generate gives the committed bytes", () => {
    const out = mkdtempSync(join(tmpdir(), "meshmart-openapi-"));
    try {
      execFileSync(
        join(ROOT, "node_modules/.bin/buf"),
        ["generate", "--template", "buf.gen.openapi.yaml", "-o", out],
        { cwd: ROOT, stdio: ["ignore", "ignore", "pipe"] },
      );
      const fresh = readFileSync(join(out, "edge/openapi/meshmart.openapi.json"), "utf8");
      assert.ok(
        fresh === text,
        "edge/openapi/meshmart.openapi.json is stale: run node_modules/.bin/buf generate --template buf.gen.openapi.yaml",
      );
      assert.ok(text.endsWith("}\n"));
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  it("GET /v1/products/{product_id}: uuid path parameter, Product in the 200 schema", () => {
    const o = op("/v1/products/{product_id}", "get");
    const p = o.parameters?.find((x) => x.name === "product_id");
    assert.ok(p);
    assert.equal(p.in, "path");
    assert.equal(p.required, true);
    assert.equal(p.schema.format, "uuid");
    const ref = o.responses["200"]?.content["application/json"]?.schema.$ref;
    assert.equal(ref, "#/components/schemas/meshmart.catalog.v1.GetProductResponse");
    const { components } = doc as unknown as {
      components: { schemas: Record<string, { properties?: Record<string, Json> }> };
    };
    const product =
      components.schemas["meshmart.catalog.v1.GetProductResponse"]?.properties?.product;
    assert.ok(product);
    assert.equal(product.$ref, "#/components/schemas/meshmart.catalog.v1.Product");
    assert.equal(o.security?.length, 0);
  });

  it("POST /v1/products requires bearerAuth and has a body", () => {
    const o = op("/v1/products", "post");
    assert.deepEqual(o.security ?? doc.security, [{ bearerAuth: [] }]);
    assert.ok(o.requestBody);
  });

  it("POST /v1/sessions is public; /v1/sessions:refresh exists", () => {
    assert.deepEqual(op("/v1/sessions", "post").security, []);
    assert.deepEqual(op("/v1/sessions:refresh", "post").security, []);
  });

  it("additional bindings and streaming methods are documented", () => {
    assert.ok(op("/v1/users/me", "get"));
    assert.ok(op("/v1/me", "get"));
    const watch = op("/v1/orders/{order_id}:watch", "get");
    assert.equal(watch.responses["200"]?.content["application/json"]?.schema.type, "array");
  });

  it("every operationId is unique", () => {
    const ids = Object.values(doc.paths).flatMap((item) =>
      Object.values(item).map((o) => o.operationId),
    );
    assert.ok(ids.length >= 20);
    assert.equal(new Set(ids).size, ids.length);
  });

  it("public operations are exactly the Envoy config's PUBLIC_METHODS", async () => {
    const { PUBLIC_METHODS } = await import("../envoy/generate.js");
    const open = Object.values(doc.paths)
      .flatMap((item) => Object.values(item))
      .filter((o) => o.security?.length === 0)
      .map((o) => (o as unknown as { "x-grpc-method": string })["x-grpc-method"])
      .map((m) => m.slice(1).replace("/", "."));
    assert.deepEqual([...new Set(open)].sort(), [...PUBLIC_METHODS].sort());
  });
});

describe("/openapi.json through Envoy", () => {
  let edge: TestEdge;
  before(async () => {
    // No services: Envoy answers /openapi.json itself, from the file it is configured with.
    edge = await startTestEdge({ services: new Map() });
  });
  after(() => edge?.close());

  it("serves the committed bytes as JSON with cache-control; HEAD gives the head", async () => {
    const res = await fetch(`${edge.url}/openapi.json`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "application/json");
    assert.match(res.headers.get("cache-control") ?? "", /max-age=\d+/);
    assert.equal(res.headers.get("server"), "envoy");
    assert.equal(await res.text(), text);
    const head = await fetch(`${edge.url}/openapi.json`, { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.equal(Number(head.headers.get("content-length")), Buffer.byteLength(text));
    assert.equal(await head.text(), "");
  });

  it("only GET and HEAD: anything else is the edge's 404 JSON", async () => {
    const res = await fetch(`${edge.url}/openapi.json`, { method: "POST", body: "{}" });
    assert.equal(res.status, 404);
    assert.deepEqual(await res.json(), { code: 5, message: "not found" });
  });
});
