/**
 * REST ⇄ protobuf: builds the request message from path variables, query and JSON body
 * (as one proto3 JSON object, then `fromJson` with unknown fields refused), and prints the
 * response as proto3 JSON with lowerCamelCase names (Envoy's default print options).
 */
import {
  type DescField,
  type DescMessage,
  fromJson,
  type JsonObject,
  type JsonValue,
  type Message,
  type Registry,
  ScalarType,
  toJson,
} from "@bufbuild/protobuf";
import type { HttpBinding } from "./http-rules.js";

/** A request the edge refuses before any upstream call (answered 400 INVALID_ARGUMENT). */
export class BadRequestError extends Error {
  override readonly name = "BadRequestError";
}

/** Finds a field by proto name or JSON name. */
function findField(message: DescMessage, name: string): DescField | undefined {
  return message.fields.find((f) => f.name === name || f.jsonName === name);
}

/** Converts one textual value (path or query) to the JSON a field of this kind accepts. */
function textToJson(field: DescField, text: string): JsonValue {
  const scalar =
    field.fieldKind === "scalar" || (field.fieldKind === "list" && field.listKind === "scalar")
      ? field.scalar
      : undefined;
  if (scalar === ScalarType.BOOL) {
    if (text === "true" || text === "1") return true;
    if (text === "false" || text === "0") return false;
    throw new BadRequestError(`invalid value for bool field ${field.name}: "${text}"`);
  }
  if (scalar !== undefined) return text; // proto3 JSON accepts numbers as strings; bytes as base64.
  const isEnum =
    field.fieldKind === "enum" || (field.fieldKind === "list" && field.listKind === "enum");
  if (isEnum) return /^-?\d+$/.test(text) ? Number(text) : text;
  const message =
    field.fieldKind === "message"
      ? field.message
      : field.fieldKind === "list" && field.listKind === "message"
        ? field.message
        : undefined;
  // Well-known types with a string JSON form (Timestamp, Duration, FieldMask, wrappers).
  if (message?.typeName.startsWith("google.protobuf.")) return text;
  throw new BadRequestError(`field ${field.name} cannot be set from a path or query parameter`);
}

/**
 * Sets `value` at the dotted `path` (proto or JSON names) in `json`, resolving each name
 * against `schema` and writing JSON names. `append` collects repeated values.
 */
export function setPath(
  schema: DescMessage,
  json: JsonObject,
  path: readonly string[],
  text: string,
  append: boolean,
): void {
  let message = schema;
  let target = json;
  for (let i = 0; i < path.length; i++) {
    const name = path[i] ?? "";
    const field = findField(message, name);
    if (field === undefined) {
      throw new BadRequestError(`unknown field "${path.join(".")}" in ${schema.typeName}`);
    }
    const last = i === path.length - 1;
    if (last) {
      const value = textToJson(field, text);
      if (field.fieldKind === "list") {
        const existing = target[field.jsonName];
        if (append && Array.isArray(existing)) existing.push(value);
        else target[field.jsonName] = [value];
      } else {
        if (append && target[field.jsonName] !== undefined) {
          throw new BadRequestError(`field "${path.join(".")}" is not repeated`);
        }
        target[field.jsonName] = value;
      }
      return;
    }
    if (field.fieldKind !== "message") {
      throw new BadRequestError(`"${path.slice(0, i + 1).join(".")}" is not a message field`);
    }
    let next = target[field.jsonName];
    if (next === undefined || next === null) {
      next = {};
      target[field.jsonName] = next;
    }
    if (typeof next !== "object" || Array.isArray(next)) {
      throw new BadRequestError(`"${path.slice(0, i + 1).join(".")}" is not an object`);
    }
    message = field.message;
    target = next;
  }
}

/** Parses the query string into (name, value) pairs; throws BadRequestError on bad escapes. */
export function parseQuery(query: string): [string, string][] {
  const out: [string, string][] = [];
  if (query === "") return out;
  for (const part of query.split("&")) {
    if (part === "") continue;
    const eq = part.indexOf("=");
    const rawName = eq === -1 ? part : part.slice(0, eq);
    const rawValue = eq === -1 ? "" : part.slice(eq + 1);
    try {
      out.push([
        decodeURIComponent(rawName.replace(/\+/g, " ")),
        decodeURIComponent(rawValue.replace(/\+/g, " ")),
      ]);
    } catch {
      throw new BadRequestError(`invalid percent-encoding in query parameter "${rawName}"`);
    }
  }
  return out;
}

/** Inputs to {@link buildRequest}. */
export interface RequestParts {
  variables: ReadonlyMap<string, string>;
  query: string;
  /** The raw body (empty buffer when none). */
  body: Buffer;
}

/** Builds the request message for `binding` from path variables, query and body. */
export function buildRequest(binding: HttpBinding, parts: RequestParts, registry?: Registry) {
  const schema = binding.method.input;
  let json: JsonObject = {};
  const bound = new Set<string>();
  if (binding.body !== "") {
    let parsed: JsonValue | undefined;
    const text = parts.body.toString("utf8").trim();
    if (text !== "") {
      try {
        parsed = JSON.parse(text) as JsonValue;
      } catch {
        throw new BadRequestError("request body is not valid JSON");
      }
    }
    if (binding.body === "*") {
      if (parsed !== undefined) {
        if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
          throw new BadRequestError("request body must be a JSON object");
        }
        json = parsed;
      }
    } else {
      const field = findField(schema, binding.body);
      if (field === undefined) throw new BadRequestError(`unknown body field ${binding.body}`);
      if (parsed !== undefined) json[field.jsonName] = parsed;
      bound.add(field.name).add(field.jsonName);
    }
  }
  for (const [path, value] of parts.variables) {
    setPath(schema, json, path.split("."), value, false);
  }
  // With body "*" every field not bound by the path comes from the body; query
  // parameters have nothing left to set and are ignored.
  if (binding.body !== "*") {
    const seen = new Set<string>();
    for (const [name, value] of parseQuery(parts.query)) {
      const path = name.split(".");
      if (parts.variables.has(name)) continue; // Bound by the path already: the path wins.
      if (bound.has(path[0] ?? "")) {
        throw new BadRequestError(`query parameter "${name}" names a field set by the body`);
      }
      setPath(schema, json, path, value, seen.has(name));
      seen.add(name);
    }
  }
  try {
    return fromJson(schema, json, {
      ignoreUnknownFields: false,
      ...(registry === undefined ? {} : { registry }),
    });
  } catch (reason) {
    throw new BadRequestError(reason instanceof Error ? reason.message : String(reason));
  }
}

/** Prints the response (or its `response_body` field) as proto3 JSON. */
export function responseJson(
  binding: HttpBinding,
  message: Message,
  registry?: Registry,
): JsonValue {
  const json = toJson(binding.method.output, message, {
    ...(registry === undefined ? {} : { registry }),
  });
  if (binding.responseBody === "") return json;
  const field = findField(binding.method.output, binding.responseBody);
  if (field === undefined || json === null || typeof json !== "object" || Array.isArray(json)) {
    return json;
  }
  const value = json[field.jsonName];
  if (value !== undefined) return value;
  // Proto3 JSON omits defaults; the selected field still prints its default.
  if (field.fieldKind === "list") return [];
  if (field.fieldKind === "map" || field.fieldKind === "message") return {};
  if (field.fieldKind === "enum") return field.enum.values[0]?.name ?? 0;
  return field.scalar === ScalarType.BOOL ? false : field.scalar === ScalarType.STRING ? "" : 0;
}
