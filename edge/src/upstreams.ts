/**
 * Upstream gRPC connections: one HTTP/2 session per service (see h2-grpc-client.ts),
 * called generically with `unary(method, …)` so every RPC works without typed clients.
 * Measured by bench/edge/client-compare.ts (client CPU per GetProduct call): connect-node's
 * gRPC transport 268 µs, @grpc/grpc-js 106 µs, this node:http2 client 69 µs.
 * Also grpc.health.v1 Check for /readyz, from a descriptor built here (the generated code
 * does not carry health.proto).
 */
import {
  create,
  createFileRegistry,
  type DescMessage,
  type DescMethodServerStreaming,
  type DescMethodUnary,
  type MessageShape,
} from "@bufbuild/protobuf";
import {
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FileDescriptorProtoSchema,
} from "@bufbuild/protobuf/wkt";
import { createH2GrpcClient, type H2GrpcClient } from "./h2-grpc-client.js";

/** grpc/health/v1/health.proto, Check only. */
const healthFile = create(FileDescriptorProtoSchema, {
  name: "grpc/health/v1/health.proto",
  package: "grpc.health.v1",
  syntax: "proto3",
  messageType: [
    {
      name: "HealthCheckRequest",
      field: [
        {
          name: "service",
          jsonName: "service",
          number: 1,
          type: FieldDescriptorProto_Type.STRING,
          label: FieldDescriptorProto_Label.OPTIONAL,
        },
      ],
    },
    {
      name: "HealthCheckResponse",
      field: [
        {
          name: "status",
          jsonName: "status",
          number: 1,
          type: FieldDescriptorProto_Type.ENUM,
          typeName: ".grpc.health.v1.HealthCheckResponse.ServingStatus",
          label: FieldDescriptorProto_Label.OPTIONAL,
        },
      ],
      enumType: [
        {
          name: "ServingStatus",
          value: [
            { name: "UNKNOWN", number: 0 },
            { name: "SERVING", number: 1 },
            { name: "NOT_SERVING", number: 2 },
            { name: "SERVICE_UNKNOWN", number: 3 },
          ],
        },
      ],
    },
  ],
  service: [
    {
      name: "Health",
      method: [
        {
          name: "Check",
          inputType: ".grpc.health.v1.HealthCheckRequest",
          outputType: ".grpc.health.v1.HealthCheckResponse",
        },
      ],
    },
  ],
});

const healthCheck = (() => {
  const service = createFileRegistry(healthFile, () => undefined).getService(
    "grpc.health.v1.Health",
  );
  const method = service?.methods.find((m) => m.name === "Check");
  if (method?.methodKind !== "unary") throw new Error("health descriptor: Check missing");
  return method as DescMethodUnary;
})();

const SERVING = 1;

/** Generic unary calls to one service. */
export interface UpstreamClient {
  unary<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
    header: Headers | undefined,
    message: MessageShape<I>,
  ): Promise<{ message: MessageShape<O> }>;
  /** A server-streaming call: the messages as they arrive, then the status (thrown if not OK). */
  serverStream<I extends DescMessage, O extends DescMessage>(
    method: DescMethodServerStreaming<I, O>,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
    header: Headers | undefined,
    message: MessageShape<I>,
  ): AsyncIterable<MessageShape<O>>;
}

/** The upstream pool: a client per service name ("catalog", "identity", …). */
export interface Upstreams {
  /** The client for a service name, or undefined when it is not configured. */
  get(service: string): UpstreamClient | undefined;
  names(): string[];
  /** grpc.health.v1 Check (overall, service "") on every upstream; name → SERVING or why not. */
  check(timeoutMs: number): Promise<Record<string, string>>;
  /** Closes every channel. */
  close(): void;
}

/** `addresses`: service name → "host:port" of its gRPC port (h2c). */
export function createUpstreams(addresses: Readonly<Record<string, string>>): Upstreams {
  const clients = new Map<string, H2GrpcClient>();
  for (const [name, address] of Object.entries(addresses)) {
    clients.set(name, createH2GrpcClient(address));
  }
  return {
    get: (service) => clients.get(service),
    names: () => [...clients.keys()],
    async check(timeoutMs) {
      const entries = await Promise.all(
        [...clients].map(async ([name, client]) => {
          try {
            const res = await client.unary(
              healthCheck,
              undefined,
              timeoutMs,
              undefined,
              create(healthCheck.input),
            );
            const status = (res.message as { status?: number }).status;
            return [name, status === SERVING ? "SERVING" : `status ${status}`] as const;
          } catch (reason) {
            return [name, reason instanceof Error ? reason.message : String(reason)] as const;
          }
        }),
      );
      return Object.fromEntries(entries);
    },
    close() {
      for (const c of clients.values()) c.close();
    },
  };
}

/** Parses `catalog=127.0.0.1:9102,identity=127.0.0.1:9101`. */
export function parseUpstreams(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of text.split(",")) {
    const item = part.trim();
    if (item === "") continue;
    const match = /^([a-z][a-z0-9-]*)=([^\s=]+:\d{1,5})$/.exec(item);
    if (match?.[1] === undefined || match[2] === undefined) {
      throw new Error(`bad upstream "${item}": expected name=host:port`);
    }
    out[match[1]] = match[2];
  }
  return out;
}
