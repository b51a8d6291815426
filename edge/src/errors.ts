/**
 * Errors as Envoy's grpc_json_transcoder prints them with convert_grpc_status: the HTTP
 * status from the standard gRPC code mapping, and a JSON google.rpc.Status body whose
 * details are proto3-JSON Any values.
 */
import { create, type JsonObject, type JsonValue, type Registry, toJson } from "@bufbuild/protobuf";
import { AnySchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";

/** gRPC code → HTTP status (google/rpc/code.proto, as Envoy maps it). */
const HTTP_STATUS: Record<number, number> = {
  0: 200,
  [Code.Canceled]: 499,
  [Code.Unknown]: 500,
  [Code.InvalidArgument]: 400,
  [Code.DeadlineExceeded]: 504,
  [Code.NotFound]: 404,
  [Code.AlreadyExists]: 409,
  [Code.PermissionDenied]: 403,
  [Code.ResourceExhausted]: 429,
  [Code.FailedPrecondition]: 400,
  [Code.Aborted]: 409,
  [Code.OutOfRange]: 400,
  [Code.Unimplemented]: 501,
  [Code.Internal]: 500,
  [Code.Unavailable]: 503,
  [Code.DataLoss]: 500,
  [Code.Unauthenticated]: 401,
};

export function httpStatusOf(code: number): number {
  return HTTP_STATUS[code] ?? 500;
}

/** An error the edge answers itself, with an explicit HTTP status (404 no route, 413…). */
export class EdgeError extends Error {
  override readonly name = "EdgeError";
  constructor(
    message: string,
    readonly code: Code,
    readonly httpStatus: number = httpStatusOf(code),
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** The HTTP answer for an error. */
export interface ErrorResponse {
  status: number;
  headers: Record<string, string>;
  body: JsonObject;
  /** The type URLs of details that could not be printed (unknown to the registry). */
  dropped: string[];
}

/** google.rpc.Status as proto3 JSON: zero code, empty message and no details are omitted. */
function statusJson(code: number, message: string, details: JsonValue[]): JsonObject {
  const body: JsonObject = {};
  if (code !== 0) body.code = code;
  if (message !== "") body.message = message;
  if (details.length > 0) body.details = details;
  return body;
}

/** Converts anything thrown while serving a request into the Envoy-shaped answer. */
export function errorResponse(reason: unknown, registry: Registry): ErrorResponse {
  if (reason instanceof EdgeError) {
    return {
      status: reason.httpStatus,
      headers: reason.headers,
      body: statusJson(reason.code, reason.message, []),
      dropped: [],
    };
  }
  const err = ConnectError.from(reason);
  const details: JsonValue[] = [];
  const dropped: string[] = [];
  for (const detail of err.details) {
    const typeName = "desc" in detail ? detail.desc.typeName : detail.type;
    const value =
      "desc" in detail ? undefined : detail.value; /* outgoing details never reach the edge */
    if (value === undefined) continue;
    const any = create(AnySchema, { typeUrl: `type.googleapis.com/${typeName}`, value });
    try {
      details.push(toJson(AnySchema, any, { registry }));
    } catch {
      dropped.push(typeName);
    }
  }
  // A connection failure raised by the edge's own client (it has a cause; an upstream's
  // answer does not) would otherwise print internal addresses.
  const message =
    err.code === Code.Unavailable && err.cause !== undefined
      ? "upstream connect error"
      : err.rawMessage;
  return {
    status: httpStatusOf(err.code),
    headers: {},
    // rawMessage: without the "[code]" prefix ConnectError adds to .message.
    body: statusJson(err.code, message, details),
    dropped,
  };
}
