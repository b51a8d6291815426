/**
 * One JSON shape for every client. The production edge (Envoy's transcoder with
 * always_print_primitive_fields) prints fields without presence even at their default
 * value; Connect JSON from the services does the same, and the OpenAPI document says so:
 * response schemas list those fields as required, request schemas stay permissive.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import {
  create,
  type DescField,
  type DescMessage,
  fromJson,
  getOption,
  hasOption,
} from "@bufbuild/protobuf";
import { FeatureSet_FieldPresence, FieldMaskSchema } from "@bufbuild/protobuf/wkt";
import { field as fieldRules } from "../gen/buf/validate/validate_pb.js";
import { http } from "../gen/google/api/annotations_pb.js";
import { startTestHost, type TestHost } from "../src/testing/host.js";
import { EVERY_METHOD, EVERY_SERVICE } from "./support/every-service.js";

type Json = Record<string, unknown>;
interface Schema {
  $ref?: string;
  type?: string | string[];
  properties?: Record<string, Schema>;
  required?: string[];
  items?: Schema;
  pattern?: string;
  description?: string;
}
interface Operation {
  parameters?: { name: string; in: string; description?: string; schema: Schema }[];
  requestBody?: { content: Record<string, { schema: Schema }> };
  responses: Record<string, { content: Record<string, { schema: Schema }> }>;
  "x-grpc-method": string;
}

const doc = JSON.parse(
  readFileSync(new URL("../../../edge/openapi/meshmart.openapi.json", import.meta.url), "utf8"),
) as {
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, Schema> };
};

function resolve(schema: Schema): Schema {
  if (schema.$ref === undefined) return schema;
  const name = schema.$ref.replace("#/components/schemas/", "");
  const found = doc.components.schemas[name];
  assert.ok(found, `${schema.$ref} exists`);
  return found;
}

/** The fields proto3 JSON prints even at their default: those without presence. */
const alwaysPresent = (m: DescMessage): DescField[] =>
  m.fields.filter((f) => f.presence === FeatureSet_FieldPresence.IMPLICIT);

const protovalidateRequired = (f: DescField): boolean =>
  hasOption(f, fieldRules) && getOption(f, fieldRules).required;

const transcoded = EVERY_METHOD.filter((m) => hasOption(m, http));
const operations = Object.values(doc.paths).flatMap((item) => Object.values(item));
const operationOf = (full: string): Operation => {
  const op = operations.find((o) => o["x-grpc-method"] === full);
  assert.ok(op, `${full} is documented`);
  return op;
};

/** Walks a response schema against its message, collecting every mismatch of `required`. */
function checkResponse(
  schema: Schema,
  message: DescMessage,
  at: string,
  out: string[],
  seen: Set<string>,
): void {
  const s = resolve(schema);
  if (seen.has(`${at}|${message.typeName}`) || message.typeName.startsWith("google.")) return;
  seen.add(`${at}|${message.typeName}`);
  const want = alwaysPresent(message).map((f) => f.jsonName);
  if (JSON.stringify(s.required ?? []) !== JSON.stringify(want)) {
    out.push(
      `${at} (${message.typeName}): required ${JSON.stringify(s.required ?? [])}, want ${JSON.stringify(want)}`,
    );
  }
  for (const f of message.fields) {
    const prop = s.properties?.[f.jsonName];
    if (prop === undefined) continue;
    if (f.fieldKind === "message") checkResponse(prop, f.message, `${at}.${f.jsonName}`, out, seen);
    if (f.fieldKind === "list" && f.listKind === "message" && prop.items) {
      checkResponse(prop.items, f.message, `${at}.${f.jsonName}[]`, out, seen);
    }
  }
}

describe("OpenAPI document", () => {
  test("response schemas require exactly the fields without presence, at every depth", () => {
    const wrong: string[] = [];
    for (const method of transcoded) {
      const op = operationOf(`/${method.parent.typeName}/${method.name}`);
      let schema = op.responses["200"]?.content["application/json"]?.schema;
      assert.ok(schema);
      if (method.methodKind === "server_streaming") schema = schema.items ?? {};
      checkResponse(schema, method.output, method.name, wrong, new Set());
    }
    assert.deepEqual(wrong, []);
  });

  test("request schemas stay permissive: only protovalidate's required fields are required", () => {
    const wrong: string[] = [];
    const check = (schema: Schema, message: DescMessage, at: string, depth: number) => {
      const s = resolve(schema);
      const allowed = message.fields.filter(protovalidateRequired).map((f) => f.jsonName);
      for (const name of s.required ?? []) {
        if (!allowed.includes(name)) wrong.push(`${at} (${message.typeName}) requires ${name}`);
      }
      if (depth > 3) return;
      for (const f of message.fields) {
        const prop = s.properties?.[f.jsonName];
        if (prop === undefined || message.typeName.startsWith("google.")) continue;
        if (f.fieldKind === "message") check(prop, f.message, `${at}.${f.jsonName}`, depth + 1);
        if (f.fieldKind === "list" && f.listKind === "message" && prop.items) {
          check(prop.items, f.message, `${at}.${f.jsonName}[]`, depth + 1);
        }
      }
    };
    for (const method of transcoded) {
      const op = operationOf(`/${method.parent.typeName}/${method.name}`);
      const body = op.requestBody?.content["application/json"]?.schema;
      if (body === undefined) continue;
      const rule = getOption(method, http);
      const message =
        rule.body === "*"
          ? method.input
          : method.input.fields.find((f) => f.name === rule.body)?.message;
      assert.ok(message, `${method.name} body`);
      check(body, message, `${method.name} body`, 0);
    }
    assert.deepEqual(wrong, []);
  });

  test("UpdateProduct's updateMask offers exactly the JSON paths the API accepts", () => {
    const method = transcoded.find((m) => m.name === "UpdateProduct");
    assert.ok(method);
    const param = operationOf(`/${method.parent.typeName}/UpdateProduct`).parameters?.find(
      (p) => p.name === "updateMask",
    );
    assert.ok(param, "updateMask is a query parameter");
    const maskField = method.input.fields.find((f) => f.name === "update_mask");
    assert.ok(maskField);
    const rule = getOption(maskField, fieldRules).type;
    assert.equal(rule.case, "fieldMask");
    const accepted = rule.value.in; // proto paths, as the handler and protovalidate see them
    // The text a reader sees names no path in its proto spelling...
    const text = `${param.description ?? ""}\n${param.schema.description ?? ""}`;
    for (const path of accepted.filter((p) => p.includes("_"))) {
      assert.doesNotMatch(text, new RegExp(`\\b${path}\\b`), `${path} is offered in proto form`);
    }
    // ...and the pattern accepts each path in the form proto3 JSON gives it, and no other.
    assert.ok(param.schema.pattern, "updateMask has a pattern");
    const pattern = new RegExp(param.schema.pattern);
    const jsonPaths = accepted.map((p) => {
      const json = JSON.parse(
        JSON.stringify(
          fromJson(
            FieldMaskSchema,
            p.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase()),
          ),
        ),
      );
      assert.deepEqual(json.paths, [p]);
      return p.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
    });
    for (const p of jsonPaths) assert.match(p, pattern);
    assert.match(jsonPaths.join(","), pattern);
    for (const p of ["image_url", "id", "version", "createTime", "imageUrl,", ""]) {
      assert.doesNotMatch(p, pattern, `${p} is not an accepted mask`);
    }
    for (const p of jsonPaths) assert.match(text, new RegExp(`\\b${p}\\b`), `${p} is named`);
  });
});

describe("Connect JSON", () => {
  // Methods whose empty request is valid, answered by stand-ins with every message field of
  // the response filled (recursively) but every scalar at its default: the case where
  // proto3 JSON omits the most.
  const emptyRequestOk = [
    "GetMe",
    "GetJwks",
    "ListCategories",
    "ListProducts",
    "ListOrders",
    "ListNotifications",
  ];
  let host: TestHost;

  function skeleton(m: DescMessage, depth = 0): Json {
    const init: Json = {};
    if (depth > 3 || m.typeName.startsWith("google.")) return init;
    for (const f of m.fields) {
      if (f.oneof !== undefined) continue;
      if (f.fieldKind === "message") init[f.localName] = skeleton(f.message, depth + 1);
      if (f.fieldKind === "list" && f.listKind === "message") {
        init[f.localName] = [skeleton(f.message, depth + 1)];
      }
    }
    return init;
  }

  before(async () => {
    host = await startTestHost({
      routes: (router) => {
        for (const service of EVERY_SERVICE) {
          const impl = Object.fromEntries(
            service.methods.map((m) => {
              const answer = () => create(m.output, skeleton(m.output) as never);
              return [
                m.localName,
                m.methodKind === "unary"
                  ? async () => answer()
                  : async function* () {
                      yield answer();
                    },
              ];
            }),
          );
          router.service(service, impl as never);
        }
      },
    });
  });
  after(() => host?.close());

  test("prints every field without presence at its default, as the REST edge does", async () => {
    const wrong: string[] = [];
    for (const method of EVERY_METHOD.filter((m) => emptyRequestOk.includes(m.name))) {
      const res = await fetch(`${host.httpUrl}/${method.parent.typeName}/${method.name}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: "{}",
      });
      assert.equal(res.status, 200, method.name);
      const check = (json: Json, m: DescMessage, at: string) => {
        for (const f of alwaysPresent(m)) {
          if (!(f.jsonName in json)) wrong.push(`${at}.${f.jsonName}`);
        }
        for (const f of m.fields) {
          const v = json[f.jsonName];
          if (
            f.fieldKind === "message" &&
            v !== undefined &&
            !f.message.typeName.startsWith("google.")
          ) {
            check(v as Json, f.message, `${at}.${f.jsonName}`);
          }
          if (f.fieldKind === "list" && f.listKind === "message" && Array.isArray(v)) {
            for (const item of v) check(item as Json, f.message, `${at}.${f.jsonName}[]`);
          }
        }
      };
      check((await res.json()) as Json, method.output, method.name);
    }
    assert.deepEqual(wrong, []);
  });
});
