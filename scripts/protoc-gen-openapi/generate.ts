/**
 * protoc-gen-openapi: one OpenAPI 3.1 document for every google.api.http rule of the files to
 * generate (run it with strategy "all"). Schemas follow the proto3 JSON mapping; protovalidate
 * rules are carried over where JSON Schema has a direct equivalent.
 */
import {
  create,
  createFileRegistry,
  type DescEnum,
  type DescField,
  type DescMessage,
  type DescMethod,
  type DescService,
  getOption,
  hasOption,
  isFieldSet,
  ScalarType,
} from "@bufbuild/protobuf";
import {
  type CodeGeneratorRequest,
  type CodeGeneratorResponse,
  CodeGeneratorResponse_Feature,
  CodeGeneratorResponseSchema,
  FeatureSet_FieldPresence,
  FileDescriptorSetSchema,
} from "@bufbuild/protobuf/wkt";
import { getComments, type Plugin } from "@bufbuild/protoplugin";
import {
  field as fieldRulesExt,
  Ignore,
  RepeatedRulesSchema,
  StringRulesSchema,
} from "@meshmart/kit/gen/buf/validate/validate_pb.js";
import { http } from "@meshmart/kit/gen/google/api/annotations_pb.js";
import type { HttpRule } from "@meshmart/kit/gen/google/api/http_pb.js";

/** A JSON Schema / OpenAPI object; key order is insertion order and is kept in the output. */
export type Json = { [key: string]: unknown };

export interface OpenApiOptions {
  title: string;
  version: string;
  serverUrl: string;
  fileName: string;
  /** Fully qualified method names (package.Service.Method) that need no token. */
  publicMethods: ReadonlySet<string>;
}

const DEFAULT_OPTIONS: OpenApiOptions = {
  title: "meshmart",
  version: "v1",
  serverUrl: "http://127.0.0.1:8080",
  fileName: "meshmart.openapi.json",
  publicMethods: new Set(),
};

/** Parses the plugin parameter: comma-separated key=value; `public` may repeat. */
export function parseOptions(parameter: string): OpenApiOptions {
  const opts = { ...DEFAULT_OPTIONS };
  const pub: string[] = [];
  for (const part of parameter.split(",")) {
    if (part.trim() === "") continue;
    const eq = part.indexOf("=");
    const key = (eq === -1 ? part : part.slice(0, eq)).trim();
    const value = eq === -1 ? "" : part.slice(eq + 1).trim();
    if (key === "title") opts.title = value;
    else if (key === "version") opts.version = value;
    else if (key === "server") opts.serverUrl = value;
    else if (key === "file") opts.fileName = value;
    else if (key === "public") pub.push(value);
    else throw new Error(`protoc-gen-openapi: unknown option "${key}"`);
  }
  opts.publicMethods = new Set(pub);
  return opts;
}

export function createOpenApiPlugin(): Plugin {
  return {
    name: "protoc-gen-openapi",
    version: "v0.1.0",
    run(request: CodeGeneratorRequest): CodeGeneratorResponse {
      const opts = parseOptions(request.parameter);
      const registry = createFileRegistry(
        create(FileDescriptorSetSchema, { file: request.protoFile }),
      );
      const services: DescService[] = [];
      for (const name of request.fileToGenerate) {
        const file = registry.getFile(name);
        if (file === undefined) throw new Error(`protoc-gen-openapi: missing file ${name}`);
        services.push(...file.services);
      }
      const doc = buildDocument(services, opts);
      return create(CodeGeneratorResponseSchema, {
        supportedFeatures: BigInt(CodeGeneratorResponse_Feature.PROTO3_OPTIONAL),
        file: [{ name: opts.fileName, content: `${formatJson(doc)}\n` }],
      });
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Output

const LINE_WIDTH = 100;

/**
 * 2-space JSON laid out as the repository's formatter (Biome) lays it out, so `biome ci` accepts
 * the committed file as generated: objects expanded, arrays of primitives on one line when they
 * fit in the line width, otherwise one element per line.
 */
export function formatJson(value: unknown, indent = "", prefix = "", suffix = ""): string {
  if (Array.isArray(value)) {
    if (value.length === 0) return `${prefix}[]${suffix}`;
    const primitive = value.every((v) => v === null || typeof v !== "object");
    if (primitive) {
      const flat = `${prefix}[${value.map((v) => JSON.stringify(v)).join(", ")}]${suffix}`;
      if (indent.length + flat.length <= LINE_WIDTH) return flat;
    }
    const inner = `${indent}  `;
    const items = value.map(
      (v, i) => `${inner}${formatJson(v, inner, "", i < value.length - 1 ? "," : "")}`,
    );
    return `${prefix}[\n${items.join("\n")}\n${indent}]${suffix}`;
  }
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value).filter(([, v]) => v !== undefined);
    if (entries.length === 0) return `${prefix}{}${suffix}`;
    const inner = `${indent}  `;
    const lines = entries.map(
      ([k, v], i) =>
        `${inner}${formatJson(v, inner, `${JSON.stringify(k)}: `, i < entries.length - 1 ? "," : "")}`,
    );
    return `${prefix}{\n${lines.join("\n")}\n${indent}}${suffix}`;
  }
  return `${prefix}${JSON.stringify(value)}${suffix}`;
}

// ---------------------------------------------------------------------------------------------
// Comments

function commentText(raw: string | undefined): string {
  if (raw === undefined) return "";
  return raw
    .split("\n")
    .map((l) => (l.startsWith(" ") ? l.slice(1) : l).trimEnd())
    .join("\n")
    .trim();
}

function describe(desc: DescMessage | DescEnum | DescField | DescMethod | DescService): string {
  return commentText(getComments(desc).leading);
}

/** First sentence of the first paragraph, on one line. */
function summaryOf(text: string): string {
  const para = (text.split("\n\n")[0] ?? "").replace(/\s*\n\s*/g, " ");
  const m = /^(.*?\.)(\s|$)/.exec(para);
  return m?.[1] ?? para;
}

function withDescription(schema: Json, description: string): Json {
  return description === "" ? schema : { ...schema, description };
}

// ---------------------------------------------------------------------------------------------
// Schemas (proto3 JSON mapping)

const STATUS_REF = "google.rpc.Status";

/**
 * Which way a message travels. Responses are printed as the edge prints them (Envoy's
 * transcoder with always_print_primitive_fields, Connect with alwaysEmitImplicit): every
 * field without presence is always there, so response schemas list those as required.
 * Requests stay permissive: only what protovalidate requires is required.
 */
export type Direction = "request" | "response";

/**
 * Suffix of the request-side schema of a message that travels both ways (Product is
 * UpdateProduct's body and every catalog answer). A hyphen cannot occur in a proto name,
 * so the name never collides with a real message.
 */
export const REQUEST_SCHEMA_SUFFIX = "-input";

class Schemas {
  readonly components = new Map<string, Json>();
  private readonly pending: { desc: DescMessage | DescEnum; dir: Direction; name: string }[] = [];

  /** `both`: full names of the messages that occur in requests and in responses. */
  constructor(private readonly both: ReadonlySet<string> = new Set()) {}

  private nameOf(desc: DescMessage | DescEnum, dir: Direction): string {
    return desc.kind === "message" && dir === "request" && this.both.has(desc.typeName)
      ? `${desc.typeName}${REQUEST_SCHEMA_SUFFIX}`
      : desc.typeName;
  }

  ref(desc: DescMessage | DescEnum, dir: Direction): Json {
    const name = this.nameOf(desc, dir);
    if (!this.components.has(name)) {
      this.components.set(name, {}); // placeholder: breaks cycles
      this.pending.push({ desc, dir, name });
    }
    return { $ref: `#/components/schemas/${name}` };
  }

  /** Fills every referenced component (transitively). */
  flush(): void {
    for (let p = this.pending.shift(); p !== undefined; p = this.pending.shift()) {
      this.components.set(
        p.name,
        p.desc.kind === "enum" ? enumSchema(p.desc) : this.messageSchema(p.desc, p.dir),
      );
    }
  }

  messageType(message: DescMessage, dir: Direction): Json {
    return wellKnown(message, this) ?? this.ref(message, dir);
  }

  messageSchema(message: DescMessage, dir: Direction, omit: ReadonlySet<string> = new Set()): Json {
    const properties: Json = {};
    const required: string[] = [];
    for (const f of message.fields) {
      if (omit.has(f.name)) continue;
      const rules = fieldRules(f);
      let schema = this.fieldSchema(f, dir);
      let desc = describeField(f);
      if (f.oneof !== undefined) {
        const others = f.oneof.fields.map((o) => o.jsonName).join(", ");
        desc = `${desc}${desc === "" ? "" : "\n\n"}Part of oneof \`${f.oneof.name}\`: at most one of ${others} is set.`;
      }
      schema = withDescription({ ...schema, ...rules.schema }, desc);
      properties[f.jsonName] = schema;
      if (dir === "response" ? alwaysPrinted(f) : rules.required) required.push(f.jsonName);
    }
    const out: Json = withDescription({ type: "object" }, describe(message));
    out.properties = properties;
    if (required.length > 0) out.required = required;
    return out;
  }

  fieldSchema(f: DescField, dir: Direction): Json {
    switch (f.fieldKind) {
      case "scalar":
        return scalarSchema(f.scalar);
      case "enum":
        return this.ref(f.enum, dir);
      case "message":
        return this.messageType(f.message, dir);
      case "list": {
        const items =
          f.listKind === "scalar"
            ? scalarSchema(f.scalar)
            : f.listKind === "enum"
              ? this.ref(f.enum, dir)
              : this.messageType(f.message, dir);
        return { type: "array", items };
      }
      case "map": {
        const values =
          f.mapKind === "scalar"
            ? scalarSchema(f.scalar)
            : f.mapKind === "enum"
              ? this.ref(f.enum, dir)
              : this.messageType(f.message, dir);
        return { type: "object", additionalProperties: values };
      }
    }
  }
}

/** Proto3 JSON prints a field even at its default exactly when it has no presence. */
function alwaysPrinted(f: DescField): boolean {
  return f.presence === FeatureSet_FieldPresence.IMPLICIT;
}

/** The message types reachable from `root` through its fields (well-known types excluded). */
function reachable(root: DescMessage, into: Set<string>): void {
  if (into.has(root.typeName) || root.typeName.startsWith("google.protobuf.")) return;
  into.add(root.typeName);
  for (const f of root.fields) {
    if (f.fieldKind === "message") reachable(f.message, into);
    else if (f.fieldKind === "list" && f.listKind === "message") reachable(f.message, into);
    else if (f.fieldKind === "map" && f.mapKind === "message") reachable(f.message, into);
  }
}

function scalarSchema(t: ScalarType): Json {
  switch (t) {
    case ScalarType.DOUBLE:
      return { type: "number", format: "double" };
    case ScalarType.FLOAT:
      return { type: "number", format: "float" };
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return { type: "integer", format: "int32" };
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return { type: "integer", format: "int64", minimum: 0, maximum: 4294967295 };
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return { type: "string", format: "int64" };
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return { type: "string", format: "uint64" };
    case ScalarType.BOOL:
      return { type: "boolean" };
    case ScalarType.STRING:
      return { type: "string" };
    case ScalarType.BYTES:
      return { type: "string", format: "byte", contentEncoding: "base64" };
  }
}

function enumSchema(e: DescEnum): Json {
  return withDescription({ type: "string", enum: e.values.map((v) => v.name) }, describe(e));
}

/** Well-known types with a special JSON form; undefined for ordinary messages. */
function wellKnown(m: DescMessage, schemas: Schemas): Json | undefined {
  const nullable = (s: Json): Json => ({ ...s, type: [s.type, "null"] });
  switch (m.typeName) {
    case "google.protobuf.Timestamp":
      return { type: "string", format: "date-time" };
    case "google.protobuf.Duration":
      return { type: "string", pattern: "^-?[0-9]+(\\.[0-9]{1,9})?s$" };
    case "google.protobuf.FieldMask":
      return { type: "string", description: "Comma-separated field paths, in lowerCamelCase." };
    case "google.protobuf.Struct":
      return { type: "object", additionalProperties: true };
    case "google.protobuf.Value":
      return {};
    case "google.protobuf.ListValue":
      return { type: "array", items: {} };
    case "google.protobuf.Empty":
      return { type: "object" };
    case "google.protobuf.Any":
      schemas.components.set("google.protobuf.Any", ANY_SCHEMA);
      return { $ref: "#/components/schemas/google.protobuf.Any" };
    case "google.protobuf.DoubleValue":
      return nullable(scalarSchema(ScalarType.DOUBLE));
    case "google.protobuf.FloatValue":
      return nullable(scalarSchema(ScalarType.FLOAT));
    case "google.protobuf.Int64Value":
      return nullable(scalarSchema(ScalarType.INT64));
    case "google.protobuf.UInt64Value":
      return nullable(scalarSchema(ScalarType.UINT64));
    case "google.protobuf.Int32Value":
      return nullable(scalarSchema(ScalarType.INT32));
    case "google.protobuf.UInt32Value":
      return nullable(scalarSchema(ScalarType.UINT32));
    case "google.protobuf.BoolValue":
      return nullable(scalarSchema(ScalarType.BOOL));
    case "google.protobuf.StringValue":
      return nullable(scalarSchema(ScalarType.STRING));
    case "google.protobuf.BytesValue":
      return nullable(scalarSchema(ScalarType.BYTES));
    default:
      return undefined;
  }
}

const ANY_SCHEMA: Json = {
  type: "object",
  description:
    "google.protobuf.Any: a message of the type named by @type, with that message's fields.",
  properties: { "@type": { type: "string" } },
  required: ["@type"],
  additionalProperties: true,
};

const STATUS_SCHEMA: Json = {
  type: "object",
  description:
    "google.rpc.Status: the error body. code is the gRPC status code; details carries e.g. buf.validate.Violations for INVALID_ARGUMENT.",
  properties: {
    code: { type: "integer", format: "int32" },
    message: { type: "string" },
    details: { type: "array", items: { $ref: "#/components/schemas/google.protobuf.Any" } },
  },
};

// ---------------------------------------------------------------------------------------------
// FieldMask: proto3 JSON spells it as one string of comma-separated lowerCamelCase paths

/** A field mask path as proto3 JSON spells it: `image_url` → `imageUrl`, segment by segment. */
export function jsonMaskPath(protoPath: string): string {
  return protoPath
    .split(".")
    .map((seg) => seg.replace(/_([a-z0-9])/g, (_all, c: string) => c.toUpperCase()))
    .join(".");
}

function isFieldMask(f: DescField): boolean {
  return f.fieldKind === "message" && f.message.typeName === "google.protobuf.FieldMask";
}

/**
 * A field's comment, with the field names a mask field's comment mentions in their JSON
 * spelling. The comment is written for the proto (`image_url`); in JSON a mask is
 * lowerCamelCase (`imageUrl`), the one form every path takes: Connect JSON (protobuf-es)
 * refuses `image_url`, while Envoy's transcoder happens to accept both. Names are those of
 * the mask's own allowed paths and of the fields of the messages beside it (the resource
 * the mask applies to, per AIP-134).
 */
function describeField(f: DescField): string {
  const text = describe(f);
  if (!isFieldMask(f) || text === "") return text;
  const names = new Set<string>(maskRule(f)?.in ?? []);
  for (const sibling of f.parent.fields) {
    if (sibling.fieldKind === "message" && !sibling.message.typeName.startsWith("google.")) {
      for (const g of sibling.message.fields) names.add(g.name);
    }
  }
  let out = text;
  for (const name of [...names].filter((n) => n.includes("_"))) {
    out = out.replace(new RegExp(`\\b${name.replace(/\./g, "\\.")}\\b`, "g"), jsonMaskPath(name));
  }
  return out;
}

function maskRule(f: DescField): { in: string[]; notIn: string[] } | undefined {
  if (!hasOption(f, fieldRulesExt)) return undefined;
  const t = getOption(f, fieldRulesExt).type;
  return t.case === "fieldMask" ? t.value : undefined;
}

/** An allow-list of mask paths as JSON Schema: the exact comma-separated forms JSON accepts. */
function maskSchema(allowed: readonly string[]): Json {
  const json = allowed.map(jsonMaskPath);
  const one = `(?:${json.map((p) => p.replace(/\./g, "\\.")).join("|")})`;
  return {
    description: `Comma-separated field paths, in lowerCamelCase, from: ${json.join(", ")}.`,
    pattern: `^${one}(?:,${one})*$`,
  };
}

// ---------------------------------------------------------------------------------------------
// protovalidate rules → JSON Schema keywords

interface CarriedRules {
  required: boolean;
  schema: Json;
}

function fieldRules(f: DescField): CarriedRules {
  if (!hasOption(f, fieldRulesExt)) return { required: false, schema: {} };
  const r = getOption(f, fieldRulesExt);
  const schema: Json = {};
  const ignoreZero = r.ignore === Ignore.IF_ZERO_VALUE;
  const t = r.type;
  if (t.case === "string") {
    const s = t.value;
    if (!ignoreZero && isFieldSet(s, StringRulesSchema.field.minLen))
      schema.minLength = Number(s.minLen);
    if (isFieldSet(s, StringRulesSchema.field.maxLen)) schema.maxLength = Number(s.maxLen);
    if (isFieldSet(s, StringRulesSchema.field.len)) {
      schema.minLength = Number(s.len);
      schema.maxLength = Number(s.len);
    }
    if (!ignoreZero && isFieldSet(s, StringRulesSchema.field.pattern)) schema.pattern = s.pattern;
    if (!ignoreZero) {
      const wk = s.wellKnown;
      if (wk.case === "uuid" && wk.value) schema.format = "uuid";
      else if (wk.case === "email" && wk.value) schema.format = "email";
      else if (wk.case === "uri" && wk.value) schema.format = "uri";
    }
  } else if (
    t.case === "int32" ||
    t.case === "sint32" ||
    t.case === "sfixed32" ||
    t.case === "uint32" ||
    t.case === "fixed32" ||
    t.case === "double" ||
    t.case === "float"
  ) {
    const lt = t.value.lessThan;
    const gt = t.value.greaterThan;
    if (lt.case === "lte") schema.maximum = lt.value;
    else if (lt.case === "lt") schema.exclusiveMaximum = lt.value;
    if (gt.case === "gte") schema.minimum = gt.value;
    else if (gt.case === "gt") schema.exclusiveMinimum = gt.value;
  } else if (t.case === "repeated") {
    const rr = t.value;
    if (isFieldSet(rr, RepeatedRulesSchema.field.minItems)) schema.minItems = Number(rr.minItems);
    if (isFieldSet(rr, RepeatedRulesSchema.field.maxItems)) schema.maxItems = Number(rr.maxItems);
  } else if (t.case === "fieldMask" && t.value.in.length > 0) {
    Object.assign(schema, maskSchema(t.value.in));
  }
  return { required: r.required, schema };
}

// ---------------------------------------------------------------------------------------------
// Paths

interface Binding {
  method: "get" | "put" | "post" | "delete" | "patch";
  path: string;
  body: string;
  responseBody: string;
}

function bindingsOf(rule: HttpRule): Binding[] {
  const out: Binding[] = [];
  const add = (r: HttpRule): void => {
    const p = r.pattern;
    if (p.case === "custom" || p.case === undefined) {
      throw new Error(`protoc-gen-openapi: unsupported http pattern ${p.case ?? "(none)"}`);
    }
    out.push({ method: p.case, path: p.value, body: r.body, responseBody: r.responseBody });
  };
  add(rule);
  for (const extra of rule.additionalBindings) add(extra);
  return out;
}

interface PathVar {
  fieldPath: string;
  pattern: string | undefined;
}

/**
 * A path variable bound to a nested field (`{product.id}`) is named `product_id` in the
 * document: one name per path whatever the method (PATCH and GET of /v1/products/{…} share
 * a path item), and tools that treat `{a.b}` as attribute access (schemathesis) read it.
 */
function pathParamName(fieldPath: string): string {
  return fieldPath.replaceAll(".", "_");
}

/** `/v1/{name=shelves/*}/books:get` → OpenAPI path `/v1/{name}/books:get` and its variables. */
function parsePath(template: string): { path: string; vars: PathVar[] } {
  const vars: PathVar[] = [];
  const path = template.replace(
    /\{([^}=]+)(?:=([^}]*))?\}/g,
    (_all, name: string, pat?: string) => {
      vars.push({ fieldPath: name, pattern: pat });
      return `{${pathParamName(name)}}`;
    },
  );
  return { path, vars };
}

function resolveField(message: DescMessage, fieldPath: string): DescField {
  let m: DescMessage | undefined = message;
  let found: DescField | undefined;
  for (const name of fieldPath.split(".")) {
    found = m?.fields.find((f) => f.name === name);
    if (found === undefined) {
      throw new Error(`protoc-gen-openapi: ${message.typeName} has no field path ${fieldPath}`);
    }
    m = found.fieldKind === "message" ? found.message : undefined;
  }
  if (found === undefined) throw new Error(`protoc-gen-openapi: empty field path`);
  return found;
}

/** Query parameters for the fields of `message` not bound elsewhere, nested names dotted. */
function queryParams(
  message: DescMessage,
  bound: ReadonlySet<string>,
  schemas: Schemas,
  prefix = "",
  protoPrefix = "",
  depth = 0,
): Json[] {
  const out: Json[] = [];
  for (const f of message.fields) {
    const protoPath = `${protoPrefix}${f.name}`;
    if (bound.has(protoPath)) continue;
    const name = `${prefix}${f.jsonName}`;
    const rules = fieldRules(f);
    let schema: Json | undefined;
    if (f.fieldKind === "scalar" || f.fieldKind === "enum") {
      schema = schemas.fieldSchema(f, "request");
    } else if (f.fieldKind === "list" && f.listKind !== "message") {
      schema = schemas.fieldSchema(f, "request");
    } else if (f.fieldKind === "message") {
      const wk = wellKnown(f.message, schemas);
      if (wk !== undefined && wk.type !== "object" && wk.$ref === undefined) schema = wk;
      else if (wk === undefined && depth < 4) {
        out.push(...queryParams(f.message, bound, schemas, `${name}.`, `${protoPath}.`, depth + 1));
      }
    }
    if (schema === undefined) continue; // maps, repeated messages, Any/Struct: body only
    const param: Json = { name, in: "query" };
    const desc = describeField(f);
    if (desc !== "") param.description = desc;
    if (rules.required && depth === 0) param.required = true;
    param.schema = { ...schema, ...rules.schema };
    if (f.fieldKind === "list") {
      param.style = "form";
      param.explode = true;
    }
    out.push(param);
  }
  return out;
}

const METHOD_ORDER = ["get", "put", "post", "delete", "patch"] as const;

export function buildDocument(services: readonly DescService[], opts: OpenApiOptions): Json {
  const requests = new Set<string>();
  const responses = new Set<string>();
  for (const service of services) {
    for (const method of service.methods.filter((m) => hasOption(m, http))) {
      reachable(method.input, requests);
      reachable(method.output, responses);
    }
  }
  const schemas = new Schemas(new Set([...requests].filter((t) => responses.has(t))));
  const paths = new Map<string, Map<string, Json>>();
  const tags: Json[] = [];

  for (const service of services) {
    const methods = service.methods.filter((m) => hasOption(m, http));
    if (methods.length === 0) continue;
    tags.push(withDescription({ name: service.name }, describe(service)));
    for (const method of methods) {
      const bindings = bindingsOf(getOption(method, http));
      bindings.forEach((b, index) => {
        const op = operation(service, method, b, index, schemas, opts);
        const { path } = parsePath(b.path);
        let item = paths.get(path);
        if (item === undefined) {
          item = new Map();
          paths.set(path, item);
        }
        if (item.has(b.method)) {
          throw new Error(`protoc-gen-openapi: two rules bind ${b.method.toUpperCase()} ${path}`);
        }
        item.set(b.method, op);
      });
    }
  }
  schemas.flush();
  schemas.components.set(STATUS_REF, STATUS_SCHEMA);
  schemas.components.set("google.protobuf.Any", ANY_SCHEMA);

  const pathsJson: Json = {};
  for (const key of [...paths.keys()].sort()) {
    const item = paths.get(key) ?? new Map<string, Json>();
    const itemJson: Json = {};
    for (const m of METHOD_ORDER) {
      const op = item.get(m);
      if (op !== undefined) itemJson[m] = op;
    }
    pathsJson[key] = itemJson;
  }
  const schemasJson: Json = {};
  for (const key of [...schemas.components.keys()].sort()) {
    schemasJson[key] = schemas.components.get(key);
  }
  tags.sort((a, b) => (String(a.name) < String(b.name) ? -1 : 1));

  return {
    openapi: "3.1.0",
    info: {
      title: opts.title,
      version: opts.version,
      description:
        "REST API of meshmart through the edge (google.api.http transcoding of the gRPC services). " +
        "Bodies use the proto3 JSON mapping: lowerCamelCase names, 64-bit integers as strings, enums as value names. " +
        "Errors are google.rpc.Status with the HTTP status mapped from the gRPC code.",
    },
    servers: [{ url: opts.serverUrl }],
    security: [{ bearerAuth: [] }],
    tags,
    paths: pathsJson,
    components: {
      schemas: schemasJson,
      securitySchemes: {
        bearerAuth: {
          type: "http",
          scheme: "bearer",
          bearerFormat: "JWT",
          description: "Access token from POST /v1/sessions (Login) or /v1/sessions:refresh.",
        },
      },
    },
  };
}

function operation(
  service: DescService,
  method: DescMethod,
  b: Binding,
  index: number,
  schemas: Schemas,
  opts: OpenApiOptions,
): Json {
  const input = method.input;
  const { vars } = parsePath(b.path);
  const bound = new Set<string>();
  const parameters: Json[] = [];
  for (const v of vars) {
    const f = resolveField(input, v.fieldPath);
    bound.add(v.fieldPath);
    const rules = fieldRules(f);
    let desc = describe(f);
    if (v.pattern !== undefined && v.pattern !== "*") {
      desc = `${desc}${desc === "" ? "" : "\n\n"}Matches the path pattern \`${v.pattern}\`.`;
    }
    if (v.fieldPath.includes(".")) {
      desc = `${desc}${desc === "" ? "" : "\n\n"}Sets \`${v.fieldPath}\` in the request body.`;
    }
    const param: Json = { name: pathParamName(v.fieldPath), in: "path" };
    if (desc !== "") param.description = desc;
    param.required = true;
    param.schema = { ...schemas.fieldSchema(f, "request"), ...rules.schema };
    parameters.push(param);
  }

  let requestBody: Json | undefined;
  if (b.body === "*") {
    const topLevelBound = new Set([...bound].filter((p) => !p.includes(".")));
    const schema =
      topLevelBound.size === 0
        ? schemas.ref(input, "request")
        : schemas.messageSchema(input, "request", topLevelBound);
    requestBody = { required: true, content: { "application/json": { schema } } };
  } else if (b.body !== "") {
    const f = resolveField(input, b.body);
    bound.add(b.body);
    requestBody = withDescription({}, describeField(f));
    requestBody.required = true;
    requestBody.content = { "application/json": { schema: schemas.fieldSchema(f, "request") } };
    // Path variables inside the body field (`{product.id}` with body "product") are bound too.
    parameters.push(...queryParams(input, bound, schemas));
  } else {
    parameters.push(...queryParams(input, bound, schemas));
  }
  // With body "*" nothing is left for the query string.

  let responseSchema: Json =
    b.responseBody === ""
      ? schemas.ref(method.output, "response")
      : schemas.fieldSchema(resolveField(method.output, b.responseBody), "response");
  let responseDescription = "OK";
  if (method.methodKind === "server_streaming") {
    responseSchema = { type: "array", items: responseSchema };
    responseDescription = "OK: a JSON array of the stream's messages, written as they come.";
  }

  const text = describe(method);
  const op: Json = { tags: [service.name] };
  if (text !== "") {
    op.summary = summaryOf(text);
    op.description = text;
  }
  op.operationId = `${service.name}_${method.name}${index === 0 ? "" : `_${index}`}`;
  if (parameters.length > 0) op.parameters = parameters;
  if (requestBody !== undefined) op.requestBody = requestBody;
  op.responses = {
    "200": {
      description: responseDescription,
      content: { "application/json": { schema: responseSchema } },
    },
    default: {
      description: "Error: a google.rpc.Status.",
      content: { "application/json": { schema: { $ref: `#/components/schemas/${STATUS_REF}` } } },
    },
  };
  op.security = opts.publicMethods.has(`${service.typeName}.${method.name}`)
    ? []
    : [{ bearerAuth: [] }];
  op["x-grpc-method"] = `/${service.typeName}/${method.name}`;
  return op;
}
