/**
 * (a) The baseline: a plain @grpc/grpc-js server with one handler for
 * /meshmart.echo.v1.EchoService/Echo. Decodes with protobuf-es fromBinary, encodes with
 * toBinary; no kit, no interceptors, no logging, no I/O. It counts what it served and
 * what failed, and prints both on exit, since h2load counts a gRPC error as a success.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  type EchoRequest,
  EchoRequestSchema,
  type EchoResponse,
  EchoResponseSchema,
} from "@meshmart/kit/gen/meshmart/echo/v1/echo_service_pb.js";
import { announceReady, failStart, stopOnSignal } from "./common.js";

let ok = 0;
let errors = 0;

const echo: grpc.MethodDefinition<EchoRequest, EchoResponse> = {
  path: "/meshmart.echo.v1.EchoService/Echo",
  requestStream: false,
  responseStream: false,
  originalName: "echo",
  requestSerialize: (m) => Buffer.from(toBinary(EchoRequestSchema, m)),
  requestDeserialize: (bytes) => {
    try {
      return fromBinary(EchoRequestSchema, bytes);
    } catch (reason) {
      errors++;
      throw reason;
    }
  },
  responseSerialize: (m) => {
    const bytes = toBinary(EchoResponseSchema, m);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  },
  responseDeserialize: (bytes) => fromBinary(EchoResponseSchema, bytes),
};

const server = new grpc.Server();
server.addService(
  { echo },
  {
    echo: (
      call: grpc.ServerUnaryCall<EchoRequest, EchoResponse>,
      callback: grpc.sendUnaryData<EchoResponse>,
    ) => {
      if (call.request.message === "") {
        errors++;
        callback({ code: grpc.status.INVALID_ARGUMENT, details: "message is empty" });
        return;
      }
      ok++;
      callback(null, create(EchoResponseSchema, { message: call.request.message }));
    },
  },
);

server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) failStart(err);
  announceReady({ grpc: port });
});

stopOnSignal(async () => {
  await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
  return { ok, errors };
});
