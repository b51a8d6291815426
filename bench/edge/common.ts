/**
 * The edge benchmark's catalog side: the catalog bench server as a pinned child on a fresh
 * test database, its gRPC request body for h2load, one real gRPC call to verify it, and its
 * rpc_requests_total counters (every HTTP 200 h2load counts must be an OK GetProduct).
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  type GetProductRequest,
  GetProductRequestSchema,
  type GetProductResponse,
  GetProductResponseSchema,
} from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_service_pb.js";
import {
  createTestDatabase,
  type TestDatabase,
  testNatsUrl,
  testRedisUrl,
  uniqueName,
} from "@meshmart/kit/testing";
import { type ServerChild, startServer } from "../catalog/children.js";

/** The repository's root. */
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
/** GetProduct's gRPC path (direct gRPC's URL path, and what Envoy transcodes REST to). */
export const GET_PRODUCT_PATH = "/meshmart.catalog.v1.CatalogService/GetProduct";
const LIST_PRODUCTS_PATH = "/meshmart.catalog.v1.CatalogService/ListProducts";

/** A gRPC length-prefixed message: flag 0 (uncompressed), big-endian length, bytes. */
export function grpcFrame(message: Uint8Array): Buffer {
  const frame = Buffer.alloc(5 + message.byteLength);
  frame.writeUInt8(0, 0);
  frame.writeUInt32BE(message.byteLength, 1);
  frame.set(message, 5);
  return frame;
}

/** GetProduct for `productId` as one gRPC frame: h2load's request body for direct gRPC. */
export function getProductBody(productId: string): Buffer {
  return grpcFrame(
    toBinary(GetProductRequestSchema, create(GetProductRequestSchema, { productId })),
  );
}

/**
 * The catalog bench server (bench/catalog/servers/catalog.ts) on a fresh test database
 * with the demo catalog, Redis cache; its first GetProduct fills the cache.
 */
export async function startCatalogChild(
  cpu: string,
  nodeFlags: string[] = [],
): Promise<{
  server: ServerChild;
  db: TestDatabase;
  productId: string;
  grpcTarget: string;
  adminUrl: string;
}> {
  const [db, redisUrl] = await Promise.all([createTestDatabase("bench_edge"), testRedisUrl()]);
  try {
    const server = await startServer({
      name: "catalog",
      entry: join(ROOT, "bench", "catalog", "servers", "catalog.ts"),
      cwd: ROOT,
      cpu,
      nodeFlags,
      env: {
        BENCH_DATABASE_URL: db.url,
        BENCH_REDIS_URL: redisUrl,
        BENCH_NATS_URL: await testNatsUrl(),
        BENCH_CACHE_PREFIX: `${uniqueName("bench_edge")}:`,
      },
    });
    const httpUrl = `http://127.0.0.1:${server.ready.http}`;
    const productId = await firstProductId(httpUrl);
    const grpcTarget = `127.0.0.1:${server.ready.grpc}`;
    const reply = await grpcGetProduct(grpcTarget, productId);
    if (reply.product?.id !== productId)
      throw new Error("catalog verification call: wrong product");
    return {
      server,
      db,
      productId,
      grpcTarget,
      adminUrl: `http://127.0.0.1:${server.ready.admin}`,
    };
  } catch (reason) {
    await db.drop().catch(() => {});
    throw reason;
  }
}

async function firstProductId(httpUrl: string): Promise<string> {
  const res = await fetch(`${httpUrl}${LIST_PRODUCTS_PATH}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ pageSize: 1 }),
  });
  const page = (await res.json()) as { products?: { id?: string }[] };
  const id = page.products?.[0]?.id;
  if (!res.ok || id === undefined)
    throw new Error(`catalog ListProducts: HTTP ${res.status}, no product`);
  return id;
}

/** One GetProduct with a real gRPC client (grpc-js, protobuf-es codecs). */
export async function grpcGetProduct(
  target: string,
  productId: string,
): Promise<GetProductResponse> {
  const client = new grpc.Client(target, grpc.credentials.createInsecure());
  try {
    return await new Promise<GetProductResponse>((resolve, reject) => {
      client.makeUnaryRequest(
        GET_PRODUCT_PATH,
        (m: GetProductRequest) => Buffer.from(toBinary(GetProductRequestSchema, m)),
        (b: Buffer) => fromBinary(GetProductResponseSchema, b),
        create(GetProductRequestSchema, { productId }),
        { deadline: Date.now() + 10_000 },
        (err, res) =>
          err || res === undefined ? reject(err ?? new Error("no response")) : resolve(res),
      );
    });
  } finally {
    client.close();
  }
}

/** The Prometheus text of a service's admin /metrics. */
export async function scrape(adminUrl: string): Promise<string> {
  const res = await fetch(`${adminUrl}/metrics`);
  if (!res.ok) throw new Error(`GET ${adminUrl}/metrics: HTTP ${res.status}`);
  return res.text();
}

/** rpc_requests_total{side="server",method} by code: after minus before. */
export function rpcCodeDeltas(
  before: string,
  after: string,
  method: string,
): Record<string, number> {
  const read = (text: string) => {
    const out = new Map<string, number>();
    for (const line of text.split("\n")) {
      if (!line.startsWith("rpc_requests_total{")) continue;
      const m = /^[^{]+\{(.*)\}\s+(\S+)/.exec(line);
      if (m === null) continue;
      const labels: Record<string, string> = {};
      for (const l of (m[1] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g))
        labels[l[1] ?? ""] = l[2] ?? "";
      if (labels.side !== "server" || labels.method !== method) continue;
      const code = labels.code ?? "";
      out.set(code, (out.get(code) ?? 0) + Number(m[2]));
    }
    return out;
  };
  const b = read(before);
  const a = read(after);
  const out: Record<string, number> = {};
  for (const [code, n] of a) out[code] = n - (b.get(code) ?? 0);
  return out;
}
