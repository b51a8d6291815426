/**
 * The client transport benchmark: CPU per unary call on the CALLING side, connect-node's
 * gRPC transport (what createServiceClient used) against the kit's grpc-js transport,
 * both calling the same bare grpc-js echo server (bench/catalog/servers/bare-echo.ts) in
 * a child process on another core. Each transport runs twice: with no call options, and
 * with what orders passes downstream through outgoing(ctx) (a signal, a timeout, the
 * request id, traceparent and authorization headers). Client CPU is this process's own
 * (process.cpuUsage(), every thread) over each measured window, divided by the calls
 * completed in it. See bench/client/README.md.
 */
import { join } from "node:path";
import { createClient, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { EchoService } from "@meshmart/kit/gen/meshmart/echo/v1/echo_service_pb.js";
import { createGrpcJsTransport } from "../../services/kit/src/grpc-js-transport.js";
import { killAllServers, startServer } from "../catalog/children.js";
import { checkMachineQuiet, cpuSeconds, MachineMonitor, pinSelf } from "../catalog/proc.js";
import { intEnv } from "../lib/env.js";
import { printProblems, printWarnings, writeResults } from "../lib/report.js";
import { alternateRounds } from "../lib/rounds.js";
import { mean } from "../lib/stats.js";

const ROOT = join(import.meta.dirname, "..", "..");
const MESSAGE = "hello from the meshmart client benchmark";
/** CPU (in cores) other processes may use during a measured round before it is flagged. */
const NOISE_CORES = 0.1;

const settings = {
  /** Concurrent callers, each making one call after another. */
  callers: intEnv("BENCH_CALLERS", 16),
  durationSeconds: intEnv("BENCH_DURATION", 24),
  rounds: intEnv("BENCH_ROUNDS", 4),
  warmupSeconds: intEnv("BENCH_WARMUP", 3),
  clientCpu: process.env.BENCH_LOAD_CPU ?? "0",
  serverCpu: process.env.BENCH_SERVER_CPU ?? "1",
};
const roundSeconds = Math.max(1, Math.round(settings.durationSeconds / settings.rounds));

type TargetId = "connect" | "grpcjs" | "connect+opts" | "grpcjs+opts";
const TARGETS: readonly TargetId[] = ["connect", "grpcjs", "connect+opts", "grpcjs+opts"];
const LABELS: Record<TargetId, string> = {
  connect: "connect-node createGrpcTransport, no options",
  grpcjs: "kit createGrpcJsTransport, no options",
  "connect+opts": "connect-node, outgoing(ctx)-like options",
  "grpcjs+opts": "grpc-js transport, outgoing(ctx)-like options",
};

interface Run {
  calls: number;
  errors: number;
  wallSeconds: number;
  clientCpuSeconds: number;
  serverCpuSeconds: number;
  othersCores: number;
}

const say = (line = ""): void => {
  process.stdout.write(`${line}\n`);
};
const problems: string[] = [];
const warnings: string[] = [];

async function main(): Promise<void> {
  const started = new Date();
  pinSelf(settings.clientCpu);
  say(
    `client benchmark: ${settings.callers} concurrent callers, ${settings.rounds} rounds × ${roundSeconds} s per target, client on cpu ${settings.clientCpu}, server on cpu ${settings.serverCpu}`,
  );
  const server = await startServer({
    name: "bare-echo",
    entry: join(ROOT, "bench", "catalog", "servers", "bare-echo.ts"),
    cwd: ROOT,
    cpu: settings.serverCpu,
  });
  try {
    const baseUrl = `http://127.0.0.1:${server.ready.grpc}`;
    // Both as createServiceClient configures its transport.
    const connect = createGrpcTransport({
      baseUrl,
      pingIntervalMs: 30_000,
      idleConnectionTimeoutMs: 5 * 60_000,
    });
    const grpcJs = createGrpcJsTransport({ baseUrl, keepaliveMs: 30_000 });
    const transports: Record<TargetId, Transport> = {
      connect,
      grpcjs: grpcJs,
      "connect+opts": connect,
      "grpcjs+opts": grpcJs,
    };
    const clients = Object.fromEntries(
      TARGETS.map((id) => [id, createClient(EchoService, transports[id])]),
    ) as Record<TargetId, ReturnType<typeof createClient<typeof EchoService>>>;
    const withOptions = (id: TargetId) => id.endsWith("+opts");

    for (const id of TARGETS) {
      const res = await clients[id].echo({ message: MESSAGE });
      if (res.message !== MESSAGE) problems.push(`${id}: the echo came back as '${res.message}'`);
    }
    await checkMachineQuiet(say, warnings);

    async function run(id: TargetId, seconds: number): Promise<Run> {
      const client = clients[id];
      const opts = withOptions(id);
      let calls = 0;
      let errors = 0;
      let stop = false;
      const caller = async () => {
        // Never aborted: like a handler's ctx.signal (one per incoming call), it is there
        // to be watched.
        const callerSignal = new AbortController().signal;
        while (!stop) {
          try {
            await client.echo(
              { message: MESSAGE },
              opts
                ? {
                    signal: callerSignal,
                    timeoutMs: 5_000,
                    headers: {
                      "x-request-id": "bench-request-0001",
                      traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                      authorization: "Bearer bench.token.value",
                    },
                  }
                : undefined,
            );
            calls++;
          } catch {
            errors++;
          }
        }
      };
      const monitor = new MachineMonitor();
      const serverStart = cpuSeconds(server.pid) ?? 0;
      const cpuStart = process.cpuUsage();
      const started = performance.now();
      const timer = setTimeout(() => {
        stop = true;
      }, seconds * 1000);
      await Promise.all(Array.from({ length: settings.callers }, caller));
      clearTimeout(timer);
      const wallSeconds = (performance.now() - started) / 1000;
      const cpu = process.cpuUsage(cpuStart);
      const serverCpuSeconds = (cpuSeconds(server.pid) ?? serverStart) - serverStart;
      const machine = monitor.stop(serverCpuSeconds);
      return {
        calls,
        errors,
        wallSeconds,
        clientCpuSeconds: (cpu.user + cpu.system) / 1e6,
        serverCpuSeconds,
        othersCores: machine.othersCores,
      };
    }

    const { rounds } = await alternateRounds<TargetId, Run>({
      targets: TARGETS,
      warmupSeconds: settings.warmupSeconds,
      rounds: settings.rounds,
      roundSeconds,
      run: (id, seconds) => run(id, seconds),
      reqPerSec: (r) => r.calls / r.wallSeconds,
      label: (id) => LABELS[id],
      say,
    });

    const perCall = (r: Run) => (r.clientCpuSeconds / r.calls) * 1e6;
    say();
    say("client CPU per call (µs), mean of rounds [min–max]; server CPU per call; calls/s");
    const summary: Record<string, unknown> = {};
    for (const id of TARGETS) {
      const runs = rounds.get(id) ?? [];
      const us = runs.map(perCall);
      const errors = runs.reduce((n, r) => n + r.errors, 0);
      if (errors > 0) problems.push(`${id}: ${errors} calls failed`);
      const noisy = runs.filter((r) => r.othersCores > NOISE_CORES).length;
      if (noisy > 0)
        warnings.push(`${id}: ${noisy} of ${runs.length} rounds had other work on the machine`);
      const server = mean(runs.map((r) => (r.serverCpuSeconds / r.calls) * 1e6));
      const rate = mean(runs.map((r) => r.calls / r.wallSeconds));
      summary[id] = { clientUsPerCall: us, serverUsPerCall: server, callsPerSecond: rate, errors };
      say(
        `  ${id.padEnd(13)} ${mean(us).toFixed(1).padStart(6)} µs [${Math.min(...us).toFixed(1)}–${Math.max(...us).toFixed(1)}]   server ${server.toFixed(1)} µs   ${Math.round(rate)} calls/s   (${LABELS[id]})`,
      );
    }
    // Ratios per round (the two targets ran back to back, so drift mostly cancels).
    const ratios = (a: TargetId, b: TargetId) => {
      const ra = rounds.get(a) ?? [];
      const rb = rounds.get(b) ?? [];
      return ra.map((r, i) => perCall(r) / perCall(rb[i] as Run));
    };
    say();
    say("grpc-js transport / connect-node, client CPU per call (per round; lower is better)");
    for (const [a, b] of [
      ["grpcjs", "connect"],
      ["grpcjs+opts", "connect+opts"],
    ] as const) {
      const r = ratios(a, b);
      summary[`${a}/${b}`] = r;
      say(
        `  ${`${a} / ${b}`.padEnd(28)} ${mean(r).toFixed(2)}   rounds: ${r.map((x) => x.toFixed(2)).join(" ")}`,
      );
    }
    grpcJs.close();
    say();
    printWarnings(say, warnings);
    printProblems(say, "INVALID RUN", problems);
    const file = await writeResults("client", started, { settings, summary, warnings, problems });
    say(`results: ${file}`);
  } finally {
    await server.stop();
  }
}

main().then(
  () => process.exit(problems.length > 0 ? 1 : 0),
  (reason: unknown) => {
    killAllServers();
    console.error(reason);
    process.exit(1);
  },
);
