/**
 * The unit bench:orders reports CPU in: one call to the bare grpc-js echo server
 * (bench/catalog/servers/bare-echo.ts: no kit, no I/O), measured in the same run on the
 * same machine, so CPU per confirmed order compares across machines of different speed
 * (and across a busy and a quiet moment on a shared one, to a degree).
 */
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { create, toBinary } from "@bufbuild/protobuf";
import { EchoRequestSchema } from "@meshmart/kit/gen/meshmart/echo/v1/echo_service_pb.js";
import { serverMode, startServer } from "../catalog/children.js";
import { runH2load } from "../catalog/h2load.js";
import { cpuSeconds } from "../catalog/proc.js";

const BENCH_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const ENTRY = join(BENCH_ROOT, "catalog", "servers", "bare-echo.ts");
const COMPILED = join(BENCH_ROOT, ".dist", "catalog", "servers", "bare-echo.js");

/** One calibration: the echo server's CPU per call under a fixed load from this process. */
export interface EchoCalibration {
  /** Server CPU (user + system) per answered call, µs. */
  usPerCall: number;
  calls: number;
  seconds: number;
}

/**
 * Starts the bare echo server (compiled, as bench:catalog runs it; `make bench-build` is
 * run first when its output is missing, since bench:orders' own build does not make it),
 * drives it with h2load as bench:catalog does (`connections` × `streams` calls in flight,
 * 8 × 8 by default, its defaults) for a warm-up second and then `seconds`, and returns
 * the server's CPU per answered call. h2load's own CPU is not counted, as in bench:catalog.
 */
export async function calibrateEcho(
  options: { seconds?: number; connections?: number; streams?: number } = {},
): Promise<EchoCalibration> {
  const seconds = options.seconds ?? 3;
  const connections = options.connections ?? 8;
  const streams = options.streams ?? 8;
  const allCpus = `0-${cpus().length - 1}`;
  if (serverMode() === "compiled" && !existsSync(COMPILED)) {
    execFileSync("make", ["--no-print-directory", "bench-build"], { stdio: "inherit" });
  }
  const server = await startServer({
    name: "bare-echo",
    entry: ENTRY,
    cwd: join(BENCH_ROOT, ".."),
    // Not pinned, like the mesh's processes: any core.
    cpu: allCpus,
    timeoutMs: 30_000,
  });
  const work = await mkdtemp(join(tmpdir(), "bench-orders-echo-"));
  try {
    const body = join(work, "echo.grpc");
    const message = toBinary(
      EchoRequestSchema,
      create(EchoRequestSchema, { message: "hello from the meshmart benchmark" }),
    );
    const frame = Buffer.alloc(5 + message.byteLength);
    frame.writeUInt32BE(message.byteLength, 1);
    frame.set(message, 5);
    await writeFile(body, frame);
    const load = (durationSeconds: number) =>
      runH2load({
        url: `http://127.0.0.1:${server.ready.grpc}/meshmart.echo.v1.EchoService/Echo`,
        bodyFile: body,
        headers: ["content-type: application/grpc", "te: trailers"],
        h1: false,
        connections,
        streams,
        durationSeconds,
        cpu: allCpus,
      });
    // JIT warm-up, not counted.
    await load(1);
    const cpu0 = cpuSeconds(server.pid) ?? 0;
    const result = await load(seconds);
    const cpu1 = cpuSeconds(server.pid) ?? 0;
    // h2load counts a gRPC error as a success; the server counts what it served.
    const calls = result.status["2xx"];
    return {
      usPerCall: ((cpu1 - cpu0) * 1e6) / Math.max(1, calls),
      calls,
      seconds: result.finishedSeconds,
    };
  } finally {
    await server.stop();
    await rm(work, { recursive: true, force: true });
  }
}
