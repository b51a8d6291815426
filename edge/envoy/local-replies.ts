/**
 * What Envoy answers on its own (no route, limits, rate limit, no upstream) in the shape the
 * caller's protocol expects, as the edge's local_reply_config.
 */
import { STATUS_CODES } from "node:http";

/**
 * gRPC status code for each HTTP status Envoy may answer on its own (no route, body or
 * headers too large, rate limited, no upstream, …), so those answers have the same
 * google.rpc.Status JSON body as the services' errors. The inverse of the transcoder's
 * gRPC → HTTP mapping where one exists.
 */
export const LOCAL_REPLY_CODES: Readonly<Record<number, number>> = {
  400: 3,
  401: 16,
  403: 7,
  404: 5,
  405: 12,
  408: 4,
  413: 8,
  415: 3,
  429: 8,
  431: 8,
  500: 13,
  501: 12,
  502: 14,
  503: 14,
  504: 4,
};

/** Connect's names of the gRPC codes (code 5 → "not_found"). */
const CONNECT_CODE_NAMES = [
  "ok",
  "canceled",
  "unknown",
  "invalid_argument",
  "deadline_exceeded",
  "not_found",
  "already_exists",
  "permission_denied",
  "resource_exhausted",
  "failed_precondition",
  "aborted",
  "out_of_range",
  "unimplemented",
  "internal",
  "unavailable",
  "data_loss",
  "unauthenticated",
] as const;

/** What a Connect streaming client reads when Envoy refuses its call with `status`. */
const CONNECT_STREAM_MESSAGES: Readonly<Record<number, string>> = {
  401: "a valid bearer token is required",
  404: "no such method at the edge",
  429: "rate limit exceeded",
  431: "request headers too large",
  503: "upstream unavailable",
  504: "upstream timeout",
};

/**
 * One Connect end-of-stream message (flags 0b10, big-endian length, JSON), as the body of a
 * local reply. Envoy cannot frame a body of variable length, so the message is fixed per
 * status; the length must stay below 0x80 so each prefix byte is one character of the
 * (UTF-8) config string.
 */
function connectEndStream(code: number, message: string): string {
  const json = JSON.stringify({ error: { code: CONNECT_CODE_NAMES[code], message } });
  const length = Buffer.byteLength(json);
  if (length >= 0x80) throw new Error(`Connect end-stream message too long (${length}): ${json}`);
  return String.fromCharCode(0b10, 0, 0, 0, length) + json;
}

/**
 * Envoy's own answers (no route, limits, rate limit, no upstream) in the shape the caller's
 * protocol expects: an end-of-stream message in a 200 for Connect streams, a Connect error
 * for Connect unary calls (POST or GET), google.rpc.Status JSON for everything else but gRPC
 * (whose local replies are trailers-only statuses already, and which the transcoder turns
 * into REST errors itself). gRPC-Web's are made by its filter from the HTTP status.
 */
export function localReplyConfig() {
  const statusIs = (op: "EQ" | "GE", status: number) => ({
    status_code_filter: {
      comparison: { op, value: { default_value: status, runtime_key: `local_reply_${status}` } },
    },
  });
  // Connect unary calls send the header; Connect GETs say `connect=v1` in the query instead.
  const connect = {
    or_filter: {
      filters: [
        { header_filter: { header: { name: "connect-protocol-version", present_match: true } } },
        {
          header_filter: {
            header: {
              name: ":path",
              // Envoy's regex matchers match the whole value.
              string_match: { safe_regex: { regex: "[^?]*\\?(.*&)?connect=v1(&.*)?" } },
            },
          },
        },
      ],
    },
  };
  const connectStream = (format: "json" | "proto") => ({
    header_filter: {
      header: {
        name: "content-type",
        string_match: { prefix: `application/connect+${format}` },
      },
    },
  });
  // Envoy decides between a gRPC and a plain local reply on the request as it arrived; the
  // filters here see it after the transcoder, which has made a REST call look like gRPC
  // (and left the original path behind).
  const notGrpc = {
    or_filter: {
      filters: [
        {
          header_filter: {
            header: {
              name: "content-type",
              string_match: { prefix: "application/grpc" },
              invert_match: true,
              treat_missing_header_as_empty: true,
            },
          },
        },
        { header_filter: { header: { name: "x-envoy-original-path", present_match: true } } },
      ],
    },
  };
  const when = (status: ReturnType<typeof statusIs>, kind: object) => ({
    and_filter: { filters: [status, kind] },
  });
  const mappers: unknown[] = [];
  const codes: [ReturnType<typeof statusIs>, number][] = [
    ...Object.entries(LOCAL_REPLY_CODES).map(
      ([status, code]) =>
        [statusIs("EQ", Number(status)), code] as [ReturnType<typeof statusIs>, number],
    ),
    // Any other error status Envoy makes up: still an error body, as an unknown error.
    [statusIs("GE", 400), 2],
  ];
  // A Connect stream hears of an error only from a 200 response's end-of-stream message;
  // any other status reaches its client as a bare "HTTP 4xx".
  for (const [status, code] of codes) {
    const http = status.status_code_filter.comparison;
    const message =
      http.op === "EQ"
        ? (CONNECT_STREAM_MESSAGES[http.value.default_value] ??
          (STATUS_CODES[http.value.default_value] ?? "error").toLowerCase())
        : "refused by the edge";
    for (const format of ["json", "proto"] as const) {
      mappers.push({
        filter: when(status, connectStream(format)),
        status_code: 200,
        body_format_override: {
          text_format_source: { inline_string: connectEndStream(code, message) },
          content_type: `application/connect+${format}`,
        },
      });
    }
  }
  for (const [status, code] of codes) {
    mappers.push({
      filter: when(status, connect),
      body_format_override: {
        json_format: { code: CONNECT_CODE_NAMES[code], message: "%LOCAL_REPLY_BODY%" },
      },
    });
  }
  for (const [status, code] of codes) {
    mappers.push({
      filter: when(status, notGrpc),
      body_format_override: { json_format: { code, message: "%LOCAL_REPLY_BODY%" } },
    });
  }
  return { mappers };
}
