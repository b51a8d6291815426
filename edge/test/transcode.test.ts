import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, createRegistry, type JsonValue, toJson } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  file_buf_validate_validate,
  ViolationsSchema,
} from "@meshmart/kit/gen/buf/validate/validate_pb.js";
import { errorResponse, httpStatusOf } from "../src/errors.js";
import { bindingsFromFiles, type HttpBinding } from "../src/http-rules.js";
import { publicFiles, rpcName } from "../src/server.js";
import { BadRequestError, buildRequest, parseQuery, responseJson } from "../src/transcode.js";
import { binding, filterSchema } from "./support/synthetic.js";

const all = bindingsFromFiles(publicFiles);
const real = (name: string): HttpBinding => {
  const found = all.find((b) => rpcName(b).endsWith(`.${name}`));
  assert.ok(found, name);
  return found;
};

/** Transcodes and prints back as JSON, for easy comparison. */
function transcode(
  b: HttpBinding,
  parts: { variables?: Record<string, string>; query?: string; body?: string },
): JsonValue {
  const msg = buildRequest(b, {
    variables: new Map(Object.entries(parts.variables ?? {})),
    query: parts.query ?? "",
    body: Buffer.from(parts.body ?? ""),
  });
  return toJson(b.method.input, msg);
}

describe("query parameters", () => {
  const get = binding("GET", "/v1/things");
  const cases: [query: string, expected: JsonValue][] = [
    ["name=a%20b", { name: "a b" }],
    ["name=a+b", { name: "a b" }],
    ["ids=1&ids=2&ids=3", { ids: ["1", "2", "3"] }],
    ["kind=KIND_MUSIC", { kind: "KIND_MUSIC" }],
    ["kind=1", { kind: "KIND_BOOK" }],
    ["active=true", { active: true }],
    ["count=9007199254740993", { count: "9007199254740993" }],
    ["page_size=5", { pageSize: 5 }],
    ["pageSize=5", { pageSize: 5 }],
    ["sizes=1&sizes=2", { sizes: [1, 2] }],
    ["inner.depth=3&inner.label=x", { inner: { depth: 3, label: "x" } }],
    ["", {}],
  ];
  for (const [query, expected] of cases) {
    it(`?${query}`, () => assert.deepEqual(transcode(get, { query }), expected));
  }

  const bad = [
    "nope=1",
    "active=maybe",
    "page_size=abc",
    "kind=KIND_NOPE",
    "name=1&name=2",
    "inner=x",
    "name=%E0%A4%A",
    "inner.nope=1",
  ];
  for (const query of bad) {
    it(`?${query} → BadRequestError`, () =>
      assert.throws(() => transcode(get, { query }), BadRequestError));
  }

  it("parseQuery keeps order and decodes", () => {
    assert.deepEqual(parseQuery("a=1&b=%2F&a=2&flag"), [
      ["a", "1"],
      ["b", "/"],
      ["a", "2"],
      ["flag", ""],
    ]);
  });
});

describe("path variables and body", () => {
  it("body '*' maps the whole object, path wins for bound fields", () => {
    const b = binding("POST", "/v1/things/{name}", "*");
    assert.deepEqual(
      transcode(b, { variables: { name: "from-path" }, body: '{"name":"x","ids":["a"]}' }),
      { name: "from-path", ids: ["a"] },
    );
  });

  it("body 'field' fills that field, path vars merge into it", () => {
    const b = real("UpdateProduct");
    assert.deepEqual(
      transcode(b, {
        variables: { "product.id": "p1" },
        body: '{"name":"New","price":{"currencyCode":"EUR","units":"3"}}',
        query: "update_mask=name,price",
      }),
      {
        product: { id: "p1", name: "New", price: { currencyCode: "EUR", units: "3" } },
        updateMask: "name,price",
      },
    );
  });

  it("nested path variable into a synthetic message", () => {
    const b = binding("GET", "/v1/{inner.label=labels/*}");
    assert.deepEqual(transcode(b, { variables: { "inner.label": "labels/x" } }), {
      inner: { label: "labels/x" },
    });
  });

  it("enum in a JSON body by name (GrantRole)", () => {
    const b = real("GrantRole");
    const json = transcode(b, { variables: { user_id: "u1" }, body: '{"role":"ROLE_ADMIN"}' });
    assert.deepEqual(json, { userId: "u1", role: "ROLE_ADMIN" });
  });

  it("empty body is an empty message", () => {
    assert.deepEqual(transcode(real("Login"), { body: "" }), {});
  });

  const bad: [string, string][] = [
    ["malformed JSON", "{"],
    ["unknown field", '{"email":"a@b.c","nope":1}'],
    ["wrong type", '{"email":5}'],
    ["not an object", "[1]"],
  ];
  for (const [name, body] of bad) {
    it(`${name} → BadRequestError`, () =>
      assert.throws(() => transcode(real("Login"), { body }), BadRequestError));
  }

  it("query parameter naming the body field → BadRequestError", () => {
    assert.throws(
      () => transcode(real("UpdateProduct"), { body: "{}", query: "product.name=x" }),
      BadRequestError,
    );
  });
});

describe("responses", () => {
  it("prints lowerCamelCase proto3 JSON, omitting defaults", () => {
    const b = binding("GET", "/v1/x");
    const msg = create(filterSchema, { pageSize: 2, ids: [] } as never);
    assert.deepEqual(responseJson(b, msg), { pageSize: 2 });
  });

  it("response_body selects a field, printing its default when unset", () => {
    const msg = create(filterSchema, { ids: ["a"] } as never);
    assert.deepEqual(responseJson(binding("GET", "/v1/x", "", "ids"), msg), ["a"]);
    assert.deepEqual(responseJson(binding("GET", "/v1/x", "", "inner"), msg), {});
    assert.deepEqual(responseJson(binding("GET", "/v1/x", "", "name"), msg), "");
  });
});

describe("errors", () => {
  const registry = createRegistry(file_buf_validate_validate);
  it("maps every gRPC code like Envoy", () => {
    const expected = [
      200, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401,
    ];
    assert.deepEqual(
      expected.map((_, code) => httpStatusOf(code)),
      expected,
    );
  });

  it("prints google.rpc.Status with Any details", () => {
    const violations = create(ViolationsSchema, {
      violations: [{ ruleId: "string.uuid", message: "value must be a valid UUID" }],
    });
    const err = new ConnectError("invalid request", Code.InvalidArgument, undefined, [
      { desc: ViolationsSchema, value: violations },
    ]);
    // What a client sees: incoming details (type + bytes), as parsed from the wire.
    const incoming = new ConnectError("invalid request", Code.InvalidArgument);
    incoming.details = [{ type: "buf.validate.Violations", value: toBinaryViolations(err) }];
    const answer = errorResponse(incoming, registry);
    assert.equal(answer.status, 400);
    assert.deepEqual(answer.body, {
      code: 3,
      message: "invalid request",
      details: [
        {
          "@type": "type.googleapis.com/buf.validate.Violations",
          violations: [{ ruleId: "string.uuid", message: "value must be a valid UUID" }],
        },
      ],
    });
  });

  it("drops details the registry cannot print, and says which", () => {
    const incoming = new ConnectError("x", Code.Internal);
    incoming.details = [{ type: "acme.Unknown", value: new Uint8Array([8, 1]) }];
    const answer = errorResponse(incoming, registry);
    assert.deepEqual(answer.body, { code: 13, message: "x" });
    assert.deepEqual(answer.dropped, ["acme.Unknown"]);
  });
});

import { toBinary } from "@bufbuild/protobuf";

function toBinaryViolations(err: ConnectError): Uint8Array {
  const [v] = err.findDetails(ViolationsSchema);
  assert.ok(v);
  return toBinary(ViolationsSchema, v);
}
