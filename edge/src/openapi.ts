/**
 * The OpenAPI 3.1 document of the REST edge, generated from the google.api.http rules by
 * scripts/protoc-gen-openapi (`buf generate --template buf.gen.openapi.yaml`) and committed in
 * edge/openapi/. Served as-is at /openapi.json.
 */
import { readFile } from "node:fs/promises";
import type { ServerResponse } from "node:http";

/** edge/openapi/meshmart.openapi.json, from edge/src (development) or edge/dist/src (build). */
const CANDIDATES = [
  new URL("../openapi/meshmart.openapi.json", import.meta.url),
  new URL("../../openapi/meshmart.openapi.json", import.meta.url),
];

let cached: Promise<string> | undefined;

/** The document's JSON text, read once. */
export function loadOpenApi(): Promise<string> {
  cached ??= (async () => {
    let lastError: unknown;
    for (const url of CANDIDATES) {
      try {
        return await readFile(url, "utf8");
      } catch (err) {
        lastError = err;
      }
    }
    cached = undefined;
    throw lastError;
  })();
  return cached;
}

/** Writes the document: 200 application/json, cacheable for five minutes. */
export async function openApiHandler(res: ServerResponse): Promise<void> {
  const text = await loadOpenApi();
  res.writeHead(200, {
    "content-type": "application/json; charset=utf-8",
    "cache-control": "public, max-age=300",
    "content-length": Buffer.byteLength(text),
  });
  res.end(text);
}
