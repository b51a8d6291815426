/**
 * google.api.http rules, compiled into matchers: the same rules Envoy's grpc_json_transcoder
 * reads from the descriptor set, read here from the generated code's embedded descriptors.
 *
 * Path template grammar (google/api/http.proto):
 *
 *     Template = "/" Segments [ Verb ] ;
 *     Segments = Segment { "/" Segment } ;
 *     Segment  = "*" | "**" | LITERAL | Variable ;
 *     Variable = "{" FieldPath [ "=" Segments ] "}" ;
 *     FieldPath = IDENT { "." IDENT } ;
 *     Verb     = ":" LITERAL ;
 */
import { type DescFile, type DescMethod, getOption, hasOption } from "@bufbuild/protobuf";
import { http } from "@meshmart/kit/gen/google/api/annotations_pb.js";
import type { HttpRule } from "@meshmart/kit/gen/google/api/http_pb.js";

/** One segment of a compiled template. */
export type Segment =
  | { kind: "literal"; value: string }
  | { kind: "single" } // `*`
  | { kind: "multi" }; // `**`, only last

/** A variable binds segments [start, end) of the path; end -1 means "to the end" (`**`). */
export interface TemplateVariable {
  fieldPath: string[];
  start: number;
  end: number;
}

export interface PathTemplate {
  source: string;
  segments: Segment[];
  verb: string | undefined;
  variables: TemplateVariable[];
}

/** Raised for a template that breaks the grammar (a bug in the protos, caught at start). */
export class TemplateError extends Error {
  override readonly name = "TemplateError";
}

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Parses a google.api.http path template. */
export function parseTemplate(source: string): PathTemplate {
  if (!source.startsWith("/")) throw new TemplateError(`template must start with '/': ${source}`);
  // The verb is the text after the last ':' that is outside braces and after the last '/'.
  let depth = 0;
  let verbAt = -1;
  for (let i = 0; i < source.length; i++) {
    const c = source[i];
    if (c === "{") depth++;
    else if (c === "}") depth--;
    else if (c === "/" && depth === 0) verbAt = -1;
    else if (c === ":" && depth === 0) verbAt = i;
  }
  if (depth !== 0) throw new TemplateError(`unbalanced braces: ${source}`);
  const body = verbAt === -1 ? source.slice(1) : source.slice(1, verbAt);
  const verb = verbAt === -1 ? undefined : source.slice(verbAt + 1);
  if (verb === "") throw new TemplateError(`empty verb: ${source}`);

  // Split on '/' outside braces.
  const parts: string[] = [];
  let current = "";
  depth = 0;
  for (const c of body) {
    if (c === "{") depth++;
    if (c === "}") depth--;
    if (c === "/" && depth === 0) {
      parts.push(current);
      current = "";
    } else current += c;
  }
  parts.push(current);

  const segments: Segment[] = [];
  const variables: TemplateVariable[] = [];
  const pushPlain = (part: string) => {
    if (part === "*") segments.push({ kind: "single" });
    else if (part === "**") segments.push({ kind: "multi" });
    else if (part === "" || /[{}*]/.test(part)) {
      throw new TemplateError(`bad segment '${part}' in ${source}`);
    } else segments.push({ kind: "literal", value: part });
  };
  for (const part of parts) {
    if (part.startsWith("{")) {
      if (!part.endsWith("}")) throw new TemplateError(`bad variable '${part}' in ${source}`);
      const inner = part.slice(1, -1);
      const eq = inner.indexOf("=");
      const path = eq === -1 ? inner : inner.slice(0, eq);
      const fieldPath = path.split(".");
      if (!fieldPath.every((p) => IDENT.test(p))) {
        throw new TemplateError(`bad field path '${path}' in ${source}`);
      }
      const start = segments.length;
      if (eq === -1) segments.push({ kind: "single" });
      else {
        const sub = inner.slice(eq + 1);
        if (sub.includes("{")) throw new TemplateError(`nested variable in ${source}`);
        for (const s of sub.split("/")) pushPlain(s);
      }
      const multi = segments.at(-1)?.kind === "multi";
      variables.push({ fieldPath, start, end: multi ? -1 : segments.length });
    } else pushPlain(part);
  }
  const multiAt = segments.findIndex((s) => s.kind === "multi");
  if (multiAt !== -1 && multiAt !== segments.length - 1) {
    throw new TemplateError(`'**' must be the last segment: ${source}`);
  }
  return { source, segments, verb, variables };
}

/** Raised for a path that cannot be percent-decoded (the edge answers 400). */
export class PathDecodeError extends Error {
  override readonly name = "PathDecodeError";
}

/**
 * Splits a request path (no query) into raw segments and a verb. The verb is split off the
 * last segment only when it is a verb some template uses, as Envoy's path matcher does,
 * so a ':' inside an id still matches `{id}`.
 */
export function splitPath(
  path: string,
  verbs: ReadonlySet<string>,
): { segments: string[]; verb: string | undefined } {
  const segments = path.replace(/^\//, "").split("/");
  let verb: string | undefined;
  const last = segments.at(-1) ?? "";
  const colon = last.lastIndexOf(":");
  if (colon !== -1 && verbs.has(last.slice(colon + 1))) {
    verb = last.slice(colon + 1);
    segments[segments.length - 1] = last.slice(0, colon);
  }
  if (segments.length === 1 && segments[0] === "") return { segments: [], verb };
  return { segments, verb };
}

/**
 * Matches raw segments against a template; returns variable values (percent-decoded:
 * fully for single-segment variables, all but %2F for multi-segment ones, as Envoy does),
 * or undefined when it does not match. Throws PathDecodeError for bad escapes.
 */
export function matchTemplate(
  template: PathTemplate,
  segments: readonly string[],
  verb: string | undefined,
): Map<string, string> | undefined {
  if (template.verb !== verb) return undefined;
  const t = template.segments;
  const multi = t.at(-1)?.kind === "multi";
  if (multi ? segments.length < t.length - 1 : segments.length !== t.length) return undefined;
  for (let i = 0; i < t.length; i++) {
    const seg = t[i];
    if (seg?.kind === "literal" && segments[i] !== seg.value) return undefined;
    if (seg?.kind === "single" && (segments[i] ?? "") === "") return undefined;
  }
  const values = new Map<string, string>();
  for (const v of template.variables) {
    const end = v.end === -1 ? segments.length : v.end;
    const raw = segments.slice(v.start, end);
    const value =
      v.end - v.start === 1
        ? decode(raw[0] ?? "", false)
        : raw.map((s) => decode(s, true)).join("/");
    values.set(v.fieldPath.join("."), value);
  }
  return values;
}

function decode(raw: string, keepSlash: boolean): string {
  try {
    return keepSlash
      ? raw
          .split(/%2F/i)
          .map((s) => decodeURIComponent(s))
          .join("%2F")
      : decodeURIComponent(raw);
  } catch {
    throw new PathDecodeError(`invalid percent-encoding in path segment '${raw}'`);
  }
}

/**
 * Specificity of a template for ordering: per segment literal (2) > `*` (1) > `**` (0),
 * compared left to right; a verb wins over none. Higher sorts first.
 */
export function compareSpecificity(a: PathTemplate, b: PathTemplate): number {
  const rank = (s: Segment | undefined) =>
    s === undefined ? -1 : s.kind === "literal" ? 2 : s.kind === "single" ? 1 : 0;
  const n = Math.max(a.segments.length, b.segments.length);
  for (let i = 0; i < n; i++) {
    const d = rank(b.segments[i]) - rank(a.segments[i]);
    if (d !== 0) return d;
  }
  return (b.verb === undefined ? 0 : 1) - (a.verb === undefined ? 0 : 1);
}

/** One HTTP binding of an RPC: method + template, and how body and response map. */
export interface HttpBinding {
  httpMethod: string;
  template: PathTemplate;
  /** "" no body, "*" the whole request, else a top-level field name. */
  body: string;
  /** "" the whole response, else a top-level field name. */
  responseBody: string;
  method: DescMethod;
}

/** The binding(s) of one HttpRule: itself plus its additional_bindings. */
export function bindingsOf(method: DescMethod, rule: HttpRule): HttpBinding[] {
  const out: HttpBinding[] = [];
  const one = (r: HttpRule) => {
    const p = r.pattern;
    let httpMethod: string;
    let path: string;
    switch (p.case) {
      case "get":
      case "post":
      case "put":
      case "patch":
      case "delete":
        httpMethod = p.case.toUpperCase();
        path = p.value;
        break;
      case "custom":
        httpMethod = p.value.kind.toUpperCase();
        path = p.value.path;
        break;
      default:
        throw new TemplateError(`${method.parent.typeName}.${method.name}: rule without a pattern`);
    }
    out.push({
      httpMethod,
      template: parseTemplate(path),
      body: r.body,
      responseBody: r.responseBody,
      method,
    });
  };
  one(rule);
  for (const extra of rule.additionalBindings) one(extra);
  return out;
}

/** Every binding declared by the services of `files`. */
export function bindingsFromFiles(files: readonly DescFile[]): HttpBinding[] {
  const out: HttpBinding[] = [];
  for (const file of files) {
    for (const service of file.services) {
      for (const method of service.methods) {
        if (!hasOption(method, http)) continue;
        out.push(...bindingsOf(method, getOption(method, http)));
      }
    }
  }
  return out;
}

/** The result of routing a request. */
export type RouteResult =
  | { kind: "match"; binding: HttpBinding; variables: Map<string, string> }
  | { kind: "method-not-allowed"; allow: string[] }
  | { kind: "not-found" };

/** Routes (method, path) to a binding; the most literal template wins. */
export interface HttpRouter {
  bindings: readonly HttpBinding[];
  route(httpMethod: string, path: string): RouteResult;
}

export function createHttpRouter(bindings: readonly HttpBinding[]): HttpRouter {
  const sorted = [...bindings].sort((a, b) => compareSpecificity(a.template, b.template));
  const verbs = new Set<string>();
  for (const b of sorted) if (b.template.verb !== undefined) verbs.add(b.template.verb);
  return {
    bindings: sorted,
    route(httpMethod, path) {
      const { segments, verb } = splitPath(path, verbs);
      const allow = new Set<string>();
      for (const binding of sorted) {
        const variables = matchTemplate(binding.template, segments, verb);
        if (variables === undefined) continue;
        if (binding.httpMethod === httpMethod) return { kind: "match", binding, variables };
        allow.add(binding.httpMethod);
      }
      return allow.size > 0
        ? { kind: "method-not-allowed", allow: [...allow] }
        : { kind: "not-found" };
    },
  };
}
