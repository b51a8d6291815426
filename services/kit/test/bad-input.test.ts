/**
 * Bad input on every method of every service: a body that is not the method's binary
 * protobuf, and strings carrying NUL (which Postgres refuses in text). Each is
 * INVALID_ARGUMENT before any handler runs, on every port and protocol, and nothing else
 * (a real internal error stays INTERNAL).
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type DescMessage, type DescMethod, fromJson, ScalarType } from "@bufbuild/protobuf";
import { pathToString } from "@bufbuild/protobuf/reflect";
import { StructSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { ViolationsSchema } from "../gen/buf/validate/validate_pb.js";
import { nulViolations } from "../src/interceptors/nul-strings.js";
import { startTestHost, type TestHost } from "../src/testing/host.js";
import { createTestTransport } from "../src/testing/interceptors.js";
import { connectCall, grpcCall, grpcWebCall, type RawAnswer } from "../src/testing/raw-rpc.js";
import { EVERY_METHOD, EVERY_SERVICE, stringLeaves, stubRoutes } from "./support/every-service.js";

function varint(n: number): number[] {
  const out: number[] = [];
  let v = n;
  while (v > 0x7f) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return out;
}

const tag = (field: number, wireType: number) => varint(field * 8 + wireType);

/**
 * Bodies no decoder may accept as `message`, each named. Most use a field number the
 * message does not have (unknown fields are skipped by wire type, so the framing itself is
 * what is wrong); the rest misuse a field it has.
 */
function malformedBodies(message: DescMessage): [string, Uint8Array][] {
  const free = Math.max(0, ...message.fields.map((f) => f.number)) + 1;
  const bodies: [string, number[]][] = [
    ["a truncated length-delimited field", [...tag(free, 2), 0x05, 0x61]],
    ["a length past the end of the body", [...tag(free, 2), ...varint(2 ** 31 - 1), 0x00]],
    ["a wire type that does not exist (7)", [...tag(free, 7), 0x00]],
    ["a group that never ends", [...tag(free, 3)]],
    ["an end-group tag with no group", [...tag(free, 4)]],
    ["groups nested 100 000 deep", Array(100_000).fill(tag(free, 3)).flat()],
  ];
  const delimited = message.fields.find(
    (f) =>
      f.fieldKind === "message" ||
      (f.fieldKind === "scalar" &&
        (f.scalar === ScalarType.STRING || f.scalar === ScalarType.BYTES)),
  );
  if (delimited !== undefined) {
    // A varint where a length-delimited field belongs: read as a length, it overruns the body.
    bodies.push([
      `${delimited.name} sent with the varint wire type`,
      [...tag(delimited.number, 0), 0x05],
    ]);
  }
  const counter = message.fields.find(
    (f) =>
      f.fieldKind === "enum" ||
      (f.fieldKind === "scalar" &&
        [ScalarType.INT32, ScalarType.UINT32, ScalarType.INT64, ScalarType.BOOL].includes(
          f.scalar,
        )),
  );
  if (counter !== undefined) {
    // (An unknown varint field is skipped byte by byte, whatever its length: lenient, harmless.)
    bodies.push([
      `${counter.name} as a varint longer than ten bytes`,
      [...tag(counter.number, 0), ...Array(11).fill(0xff), 0x01],
    ]);
  }
  const text = message.fields.find(
    (f) => f.fieldKind === "scalar" && f.scalar === ScalarType.STRING,
  );
  if (text !== undefined) {
    bodies.push([`${text.name} with invalid UTF-8`, [...tag(text.number, 2), 0x02, 0xc3, 0x28]]);
  }
  return bodies.map(([name, bytes]) => [name, Uint8Array.from(bytes)]);
}

const reached: DescMethod[] = [];
let failWith: (() => ConnectError) | undefined;
let host: TestHost;

before(async () => {
  host = await startTestHost({
    // The stand-ins answer normally unless a test sets failWith.
    routes: stubRoutes(reached, () => failWith?.()),
  });
});
after(() => host?.close());

type Protocol = {
  name: string;
  call(method: DescMethod, bytes: Uint8Array): Promise<RawAnswer>;
  invalidArgument(answer: RawAnswer, method: DescMethod): boolean;
  internal(answer: RawAnswer): boolean;
};

const protocols: Protocol[] = [
  {
    name: "Connect (connect-node)",
    call: (method, bytes) => connectCall(host.httpUrl, method, bytes),
    invalidArgument: (a, m) =>
      a.status === "invalid_argument" && (m.methodKind !== "unary" || a.http === 400),
    internal: (a) => a.status === "internal",
  },
  {
    name: "gRPC-Web (connect-node)",
    call: (method, bytes) => grpcWebCall(host.httpUrl, method, bytes),
    invalidArgument: (a) => a.status === String(Code.InvalidArgument),
    internal: (a) => a.status === String(Code.Internal),
  },
  {
    name: "gRPC (grpc-js)",
    call: (method, bytes) => grpcCall(host.grpcTarget, method, bytes),
    invalidArgument: (a) => a.status === String(Code.InvalidArgument),
    internal: (a) => a.status === String(Code.Internal),
  },
];

describe("a body that is not the method's binary protobuf is INVALID_ARGUMENT", () => {
  for (const protocol of protocols) {
    test(`${protocol.name}: every method of every service`, async () => {
      reached.length = 0;
      const wrong: string[] = [];
      for (const method of EVERY_METHOD) {
        const answers = await Promise.all(
          malformedBodies(method.input).map(async ([name, bytes]) => ({
            name,
            answer: await protocol.call(method, bytes),
          })),
        );
        for (const { name, answer } of answers) {
          const clear = answer.message.includes(method.input.typeName);
          if (!protocol.invalidArgument(answer, method) || !clear) {
            wrong.push(
              `${method.parent.name}.${method.name}, ${name}: HTTP ${answer.http} ${answer.status} "${answer.message}"`,
            );
          }
        }
      }
      assert.deepEqual(wrong, []);
      assert.deepEqual(
        reached.map((m) => m.name),
        [],
        "no handler ran",
      );
    });
  }

  test("a handler's own INTERNAL about a bad message (a peer's garbage) stays INTERNAL", async () => {
    failWith = () => new ConnectError("parse binary: premature EOF", Code.Internal);
    try {
      // A method whose empty request is valid, so the handler runs.
      const method = EVERY_METHOD.find((m) => m.name === "GetJwks");
      assert.ok(method);
      for (const protocol of protocols) {
        const answer = await protocol.call(method, new Uint8Array());
        assert.ok(protocol.internal(answer), `${protocol.name}: ${JSON.stringify(answer)}`);
      }
    } finally {
      failWith = undefined;
    }
  });

  test("the process is still serving", async () => {
    const res = await fetch(`${host.adminUrl}/healthz`);
    assert.equal(res.status, 200);
  });
});

/** `field.sub[0].leaf` with map keys as `["k"]`, from a violation's field path. */
function violationPaths(err: ConnectError): string[] {
  const [detail] = err.findDetails(ViolationsSchema);
  return (detail?.violations ?? []).map((v) =>
    (v.field?.elements ?? [])
      .map((e, i) => {
        const dot = i === 0 ? "" : ".";
        const sub = e.subscript;
        if (sub.case === "index") return `${dot}${e.fieldName}[${sub.value}]`;
        if (sub.case === "stringKey") {
          return v.forKey && i === (v.field?.elements.length ?? 0) - 1
            ? `${dot}${e.fieldName}{key}`
            : `${dot}${e.fieldName}["${sub.value}"]`;
        }
        return `${dot}${e.fieldName}`;
      })
      .join(""),
  );
}

describe("a NUL character in any request string is INVALID_ARGUMENT naming the field", () => {
  const { transport } = createTestTransport(stubRoutes(reached));

  async function call(method: DescMethod, message: unknown): Promise<ConnectError | undefined> {
    // biome-ignore lint/suspicious/noExplicitAny: one client per service, methods by name
    const client = createClient(method.parent, transport) as any;
    try {
      if (method.methodKind === "server_streaming") {
        for await (const _ of client[method.localName](message));
      } else {
        await client[method.localName](message);
      }
      return undefined;
    } catch (reason) {
      return ConnectError.from(reason);
    }
  }

  for (const service of EVERY_SERVICE) {
    test(`${service.name}: every string of every request`, async () => {
      reached.length = 0;
      const wrong: string[] = [];
      let leaves = 0;
      for (const method of service.methods) {
        for (const leaf of stringLeaves(method.input)) {
          leaves++;
          const err = await call(method, leaf.build("before\u0000after"));
          const paths = err === undefined ? [] : violationPaths(err);
          if (err?.code !== Code.InvalidArgument || !paths.includes(leaf.path)) {
            wrong.push(
              `${method.name} ${leaf.path}: ${err === undefined ? "accepted" : `${Code[err.code]} ${err.rawMessage} ${JSON.stringify(paths)}`}`,
            );
          }
        }
      }
      assert.deepEqual(wrong, []);
      assert.ok(leaves > 0, "the service's requests carry strings");
      assert.deepEqual(
        reached.map((m) => m.name),
        [],
        "no handler ran",
      );
    });
  }

  test("the violation says what is wrong, with a rule id a client can branch on", async () => {
    const method = EVERY_METHOD.find((m) => m.name === "ListProducts");
    assert.ok(method);
    const leaf = stringLeaves(method.input).find((l) => l.path === "query");
    assert.ok(leaf);
    const err = await call(method, leaf.build("mug\u0000"));
    const [detail] = err?.findDetails(ViolationsSchema) ?? [];
    assert.deepEqual(
      detail?.violations.map((v) => ({ rule: v.ruleId, message: v.message })),
      [{ rule: "string.no_nul", message: "must not contain the NUL character (U+0000)" }],
    );
    assert.match(err?.rawMessage ?? "", /query/);
  });
});

test("the NUL check reaches map keys, map values, oneofs and recursive types", () => {
  // google.protobuf.Struct has all three: map<string, Value>, Value's oneof, Value → Struct.
  const struct = fromJson(StructSchema, {
    clean: "text",
    "key\u0000": 1,
    outer: { inner: ["ok", "bad\u0000"] },
  });
  const found = nulViolations(StructSchema, struct).map((v) => ({
    path: pathToString(v.field),
    forKey: v.forKey,
  }));
  assert.deepEqual(found, [
    { path: 'fields["key\u0000"]', forKey: true },
    {
      path: 'fields["outer"].struct_value.fields["inner"].list_value.values[1].string_value',
      forKey: false,
    },
  ]);
  assert.deepEqual(
    nulViolations(StructSchema, fromJson(StructSchema, { a: ["b", { c: "d" }] })),
    [],
  );
});
