/**
 * Which gRPC client library should the edge call its upstreams with? Against one catalog
 * gRPC port (bench/catalog/servers/catalog.ts on its own core, a Redis cache hit), this
 * process (pinned to the other core) issues N unary GetProduct calls at concurrency 64
 * with
 *
 *   (a) @connectrpc/connect-node createGrpcTransport + generic transport.unary,
 *   (b) @grpc/grpc-js Client.makeUnaryRequest with protobuf-es serializers,
 *   (c) the edge's own client over node:http2 (edge/src/h2-grpc-client.ts, the edge today),
 *
 * each over one HTTP/2 connection, with the edge's 15 s deadline and an x-request-id
 * header, a warm-up round each, then alternating measured rounds. Reports calls/s and
 * client CPU µs/call (process.cpuUsage), plus the catalog's CPU per call.
 *
 *   node --conditions=development --import tsx bench/edge/client-compare.ts
 *   knobs: COMPARE_CALLS (20000 per round), COMPARE_CONCURRENCY (64), COMPARE_ROUNDS (3),
 *          BENCH_LOAD_CPU (0, this process), BENCH_SERVER_CPU (1, catalog)
 */
import { spawnSync } from "node:child_process";
import { availableParallelism, cpus } from "node:os";
import { create, type DescMethodUnary, fromBinary, toBinary } from "@bufbuild/protobuf";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import {
  CatalogService,
  type GetProductRequest,
  GetProductRequestSchema,
  type GetProductResponse,
  GetProductResponseSchema,
} from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_service_pb.js";
import { createH2GrpcClient } from "../../edge/src/h2-grpc-client.js";
import type { UpstreamClient } from "../../edge/src/upstreams.js";
import { killAllServers } from "../catalog/children.js";
import { cpusAllowed, MachineMonitor, machineBusy, Sampler } from "../catalog/proc.js";
import { intEnv } from "../lib/env.js";
import { writeResults } from "../lib/report.js";
import { GET_PRODUCT_PATH, rpcCodeDeltas, scrape, startCatalogChild } from "./common.js";

const calls = intEnv("COMPARE_CALLS", 20_000);
const concurrency = intEnv("COMPARE_CONCURRENCY", 64);
const rounds = intEnv("COMPARE_ROUNDS", 3);
const loadCpu = process.env.BENCH_LOAD_CPU ?? "0";
const serverCpu = process.env.BENCH_SERVER_CPU ?? "1";
const TIMEOUT_MS = 15_000;
const say = (line = ""): void => {
  process.stdout.write(`${line}\n`);
};

type Call = (productId: string) => Promise<string | undefined>;
type ClientId = "a" | "b" | "c";
interface Client {
  id: ClientId;
  label: string;
  call: Call;
  close(): void;
}

const getProduct = CatalogService.method.getProduct as DescMethodUnary<
  typeof GetProductRequestSchema,
  typeof GetProductResponseSchema
>;

/**
 * A client over anything with Connect's `Transport.unary` signature: connect-node's
 * transport, and the edge's client, which mirrors it.
 */
function unaryClient(
  id: ClientId,
  label: string,
  caller: Pick<UpstreamClient, "unary">,
  close: () => void,
): Client {
  return {
    id,
    label,
    async call(productId) {
      const res = await caller.unary(
        getProduct,
        undefined,
        TIMEOUT_MS,
        new Headers({ "x-request-id": "bench" }),
        create(GetProductRequestSchema, { productId }),
      );
      return res.message.product?.id;
    },
    close,
  };
}

function connectClient(target: string): Client {
  const baseUrl = `http://${target}`;
  const sessionManager = new Http2SessionManager(baseUrl, { pingIntervalMs: 30_000 });
  const transport = createGrpcTransport({ baseUrl, sessionManager });
  return unaryClient("a", "(a) connect-node createGrpcTransport, transport.unary", transport, () =>
    sessionManager.abort(),
  );
}

function grpcJsClient(target: string): Client {
  const client = new grpc.Client(target, grpc.credentials.createInsecure());
  const serialize = (m: GetProductRequest) => Buffer.from(toBinary(GetProductRequestSchema, m));
  const deserialize = (b: Buffer) => fromBinary(GetProductResponseSchema, b);
  return {
    id: "b",
    label: "(b) grpc-js Client.makeUnaryRequest, protobuf-es",
    call(productId) {
      const metadata = new grpc.Metadata();
      metadata.set("x-request-id", "bench");
      return new Promise((resolve, reject) => {
        client.makeUnaryRequest(
          GET_PRODUCT_PATH,
          serialize,
          deserialize,
          create(GetProductRequestSchema, { productId }),
          metadata,
          { deadline: Date.now() + TIMEOUT_MS },
          (err: grpc.ServiceError | null, res?: GetProductResponse) =>
            err ? reject(err) : resolve(res?.product?.id),
        );
      });
    },
    close: () => client.close(),
  };
}

function edgeH2Client(target: string): Client {
  const client = createH2GrpcClient(target);
  return unaryClient("c", "(c) the edge's node:http2 gRPC client", client, () => client.close());
}

/** `n` calls, `concurrency` in flight; wall time, client CPU, errors. */
async function round(client: Client, productId: string, n: number) {
  let next = 0;
  let errors = 0;
  let wrong = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const worker = async () => {
    while (next < n) {
      next++;
      try {
        if ((await client.call(productId)) !== productId) wrong++;
      } catch {
        errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  return { seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6, errors, wrong };
}

async function main(): Promise<void> {
  const started = new Date();
  say(
    `meshmart edge client comparison: ${started.toISOString()}, node ${process.version}, ${cpus()[0]?.model ?? "?"} x${availableParallelism()}`,
  );
  say(
    `client on cpu ${loadCpu}, catalog on cpu ${serverCpu}; ${calls} GetProduct calls per round at concurrency ${concurrency}, 1 warm-up + ${rounds} alternating rounds`,
  );
  const busy = await machineBusy(1000);
  say(`machine busy before the run: ${(busy * 100).toFixed(0)}%`);
  const catalog = await startCatalogChild(serverCpu);
  try {
    spawnSync("taskset", ["-a", "-p", "-c", loadCpu, String(process.pid)], { stdio: "ignore" });
    const clients = [
      connectClient(catalog.grpcTarget),
      grpcJsClient(catalog.grpcTarget),
      edgeH2Client(catalog.grpcTarget),
    ];
    const stats = new Map(clients.map((c) => [c.id, [] as Record<string, number>[]]));
    const problems: string[] = [];
    for (let r = 0; r <= rounds; r++) {
      const line: string[] = [];
      for (const c of clients) {
        const before = await scrape(catalog.adminUrl);
        const sampler = new Sampler(catalog.server.pid);
        const machine = new MachineMonitor();
        const res = await round(c, catalog.productId, r === 0 ? Math.ceil(calls / 4) : calls);
        const server = sampler.stop();
        const m = machine.stop(server.cpuSeconds + res.cpuSeconds);
        const codes = rpcCodeDeltas(before, await scrape(catalog.adminUrl), "GetProduct");
        const n = r === 0 ? Math.ceil(calls / 4) : calls;
        const bad =
          res.errors +
          res.wrong +
          Object.entries(codes).reduce((s, [k, v]) => s + (k === "ok" ? 0 : v), 0);
        if (bad > 0 || (codes.ok ?? 0) !== n) {
          problems.push(
            `${c.id} round ${r}: ${res.errors} errors, ${res.wrong} wrong, server codes ${JSON.stringify(codes)}`,
          );
        }
        const row = {
          callsPerSec: n / res.seconds,
          clientUsPerCall: (res.cpuSeconds * 1e6) / n,
          clientCpu: res.cpuSeconds / res.seconds,
          catalogUsPerCall: (server.cpuSeconds * 1e6) / n,
          catalogCpu: server.cpuSeconds / server.wallSeconds,
          othersCores: m.othersCores,
          dependencyCores: m.dependencyCores,
        };
        if (r > 0) stats.get(c.id)?.push(row);
        line.push(`${c.id} ${Math.round(row.callsPerSec)}/s ${Math.round(row.clientUsPerCall)} µs`);
      }
      say(`${r === 0 ? "warm-up" : `round ${r}/${rounds}`}: ${line.join(", ")}`);
    }
    for (const c of clients) c.close();
    say();
    say(
      `${"client".padEnd(56)}${["calls/s", "spread", "cli µs", "cli CPU", "cat µs", "cat CPU", "others"].map((h) => h.padStart(9)).join("")}`,
    );
    const summary: Partial<
      Record<ClientId, { callsPerSec: number; clientUsPerCall: number } & Record<string, number>>
    > = {};
    for (const c of clients) {
      const rows = stats.get(c.id) ?? [];
      const mean = (k: string) => rows.reduce((s, r) => s + (r[k] ?? 0), 0) / rows.length;
      const rates = rows.map((r) => r.callsPerSec ?? 0);
      const s = {
        callsPerSec: mean("callsPerSec"),
        spread: (Math.max(...rates) - Math.min(...rates)) / 2 / mean("callsPerSec"),
        clientUsPerCall: mean("clientUsPerCall"),
        clientCpu: mean("clientCpu"),
        catalogUsPerCall: mean("catalogUsPerCall"),
        catalogCpu: mean("catalogCpu"),
        othersCores: Math.max(...rows.map((r) => r.othersCores ?? 0)),
      };
      summary[c.id] = s;
      say(
        c.label.padEnd(56) +
          [
            String(Math.round(s.callsPerSec)),
            `±${Math.round(s.spread * 100)}%`,
            s.clientUsPerCall.toFixed(1),
            `${Math.round(s.clientCpu * 100)}%`,
            s.catalogUsPerCall.toFixed(1),
            `${Math.round(s.catalogCpu * 100)}%`,
            `${Math.round(s.othersCores * 100)}%`,
          ]
            .map((x) => x.padStart(9))
            .join(""),
      );
    }
    const { a, b, c } = summary;
    if (a && b) {
      say(
        `  grpc-js vs connect-node: ${(b.callsPerSec / a.callsPerSec).toFixed(2)}x calls/s, ${(a.clientUsPerCall / b.clientUsPerCall).toFixed(2)}x less client CPU per call`,
      );
    }
    if (b && c) {
      say(
        `  node:http2 vs grpc-js: ${(c.callsPerSec / b.callsPerSec).toFixed(2)}x calls/s, ${(b.clientUsPerCall / c.clientUsPerCall).toFixed(2)}x less client CPU per call`,
      );
    }
    if (cpusAllowed(process.pid) !== loadCpu)
      problems.push(`client allowed on cpus ${cpusAllowed(process.pid)}`);
    for (const p of problems) say(`!!  ${p}`);
    const resultsFile = await writeResults("edge-clients", started, {
      settings: { calls, concurrency, rounds, loadCpu, serverCpu },
      machineBusyBefore: busy,
      summary,
      rounds: Object.fromEntries(stats),
      problems,
    });
    say(`results: ${resultsFile}`);
    if (problems.length > 0) process.exitCode = 1;
    await catalog.server.stop();
  } finally {
    killAllServers();
    await catalog.db.drop().catch(() => {});
  }
}

try {
  await main();
} catch (reason) {
  console.error("client comparison failed:", reason instanceof Error ? reason.stack : reason);
  process.exitCode = 1;
}
process.exit();
