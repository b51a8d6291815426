import { type DescField, type DescMessage, ScalarType } from "@bufbuild/protobuf";
import { buildPath, type PathBuilder } from "@bufbuild/protobuf/reflect";
import { Violation } from "@bufbuild/protovalidate";

/** Rule id of the violation a NUL character gets; clients may branch on it. */
export const NUL_RULE_ID = "string.no_nul";
const NUL_MESSAGE = "must not contain the NUL character (U+0000)";
const NUL = "\u0000";

// How to reach every string of one message type. Planned once per type from the
// descriptor, so a call only reads the fields that can hold a string: a request with none
// (GetMe, ListCategories) costs one empty loop.
type Step =
  | { kind: "string"; name: string; field: DescField }
  | { kind: "strings"; name: string; field: DescField }
  | { kind: "message"; name: string; field: DescField; plan: Step[] }
  | { kind: "messages"; name: string; field: DescField; plan: Step[] }
  | {
      kind: "map";
      name: string;
      field: DescField;
      stringKeys: boolean;
      stringValues: boolean;
      plan: Step[] | undefined;
    }
  | { kind: "oneof"; name: string; cases: Map<string, Step> };

const plans = new WeakMap<DescMessage, Step[]>();

/**
 * Every string in `message` (nested messages, repeated fields, map keys and values, oneofs)
 * that contains U+0000, as protovalidate violations naming the field. Postgres refuses
 * the character in text, so a request carrying one would otherwise fail at the database
 * as an INTERNAL error after part of its work; JSON (`\u0000`) and protobuf (a 0x00 byte
 * inside a string) both deliver it intact.
 */
export function nulViolations(schema: DescMessage, message: object): Violation[] {
  const plan = planOf(schema);
  // The common case, no NUL anywhere, allocates nothing; paths are built only for a hit.
  if (plan.length === 0 || !hasNul(message, plan)) return [];
  const out: Violation[] = [];
  collect(message, plan, buildPath(schema), out);
  return out;
}

function planOf(schema: DescMessage): Step[] {
  let plan = plans.get(schema);
  if (plan === undefined) {
    const reach = reachesString(schema);
    plan = [];
    // Registered before it is filled: a recursive type refers to its own plan.
    plans.set(schema, plan);
    fill(schema, plan, reach);
  }
  return plan;
}

/** The message types reachable from `root` that can hold a string somewhere below. */
function reachesString(root: DescMessage): Set<DescMessage> {
  const types: DescMessage[] = [];
  const seen = new Set<DescMessage>();
  const visit = (m: DescMessage) => {
    if (seen.has(m)) return;
    seen.add(m);
    types.push(m);
    for (const f of m.fields) {
      const sub = messageOf(f);
      if (sub !== undefined) visit(sub);
    }
  };
  visit(root);
  const yes = new Set<DescMessage>();
  // Fixpoint over the (possibly cyclic) graph: a type holds a string if a field is one or
  // leads to a type that does.
  for (let changed = true; changed; ) {
    changed = false;
    for (const m of types) {
      if (yes.has(m)) continue;
      if (m.fields.some((f) => isString(f) || isStringKeyedMap(f) || leadsTo(f, yes))) {
        yes.add(m);
        changed = true;
      }
    }
  }
  return yes;
}

function messageOf(f: DescField): DescMessage | undefined {
  if (f.fieldKind === "message") return f.message;
  if (f.fieldKind === "list" && f.listKind === "message") return f.message;
  if (f.fieldKind === "map" && f.mapKind === "message") return f.message;
  return undefined;
}

function isString(f: DescField): boolean {
  return (
    (f.fieldKind === "scalar" || (f.fieldKind === "list" && f.listKind === "scalar")) &&
    f.scalar === ScalarType.STRING
  );
}

function isStringKeyedMap(f: DescField): boolean {
  return (
    f.fieldKind === "map" &&
    (f.mapKey === ScalarType.STRING || (f.mapKind === "scalar" && f.scalar === ScalarType.STRING))
  );
}

function leadsTo(f: DescField, yes: ReadonlySet<DescMessage>): boolean {
  const sub = messageOf(f);
  return sub !== undefined && yes.has(sub);
}

function fill(schema: DescMessage, plan: Step[], reach: ReadonlySet<DescMessage>): void {
  const stepOf = (f: DescField): Step | undefined => {
    const name = f.localName;
    switch (f.fieldKind) {
      case "scalar":
        return f.scalar === ScalarType.STRING ? { kind: "string", name, field: f } : undefined;
      case "list":
        if (f.listKind === "scalar") {
          return f.scalar === ScalarType.STRING ? { kind: "strings", name, field: f } : undefined;
        }
        if (f.listKind === "message" && reach.has(f.message)) {
          return { kind: "messages", name, field: f, plan: planOf(f.message) };
        }
        return undefined;
      case "message":
        return reach.has(f.message)
          ? { kind: "message", name, field: f, plan: planOf(f.message) }
          : undefined;
      case "map": {
        const stringKeys = f.mapKey === ScalarType.STRING;
        const stringValues = f.mapKind === "scalar" && f.scalar === ScalarType.STRING;
        const sub = f.mapKind === "message" && reach.has(f.message) ? planOf(f.message) : undefined;
        return stringKeys || stringValues || sub !== undefined
          ? { kind: "map", name, field: f, stringKeys, stringValues, plan: sub }
          : undefined;
      }
      case "enum":
        return undefined;
    }
  };
  for (const member of schema.members) {
    if (member.kind === "oneof") {
      const cases = new Map<string, Step>();
      for (const f of member.fields) {
        const step = stepOf(f);
        if (step !== undefined) cases.set(f.localName, step);
      }
      if (cases.size > 0) plan.push({ kind: "oneof", name: member.localName, cases });
    } else {
      const step = stepOf(member);
      if (step !== undefined) plan.push(step);
    }
  }
}

// Messages are plain objects keyed by each field's localName; maps are plain objects too.
type Fields = Record<string, unknown>;

function hasNul(message: object, plan: Step[]): boolean {
  const m = message as Fields;
  for (const step of plan) if (stepHasNul(step, m[step.name])) return true;
  return false;
}

function stepHasNul(step: Step, value: unknown): boolean {
  switch (step.kind) {
    case "string":
      return (value as string).includes(NUL);
    case "strings":
      for (const s of value as string[]) if (s.includes(NUL)) return true;
      return false;
    case "message":
      return value !== undefined && hasNul(value as object, step.plan);
    case "messages":
      for (const v of value as object[]) if (hasNul(v, step.plan)) return true;
      return false;
    case "map": {
      const entries = value as Fields;
      for (const key in entries) {
        if (step.stringKeys && key.includes(NUL)) return true;
        const v = entries[key];
        if (step.stringValues && (v as string).includes(NUL)) return true;
        if (step.plan !== undefined && hasNul(v as object, step.plan)) return true;
      }
      return false;
    }
    case "oneof": {
      const { case: which, value: inner } = value as { case: string | undefined; value: unknown };
      const sub = which === undefined ? undefined : step.cases.get(which);
      return sub !== undefined && stepHasNul(sub, inner);
    }
  }
}

function collect(message: object, plan: Step[], at: PathBuilder, out: Violation[]): void {
  const m = message as Fields;
  for (const step of plan) collectStep(step, m[step.name], at, out);
}

function collectStep(step: Step, value: unknown, at: PathBuilder, out: Violation[]): void {
  const violation = (path: PathBuilder, forKey = false) =>
    out.push(new Violation(NUL_MESSAGE, NUL_RULE_ID, path.toPath(), [], forKey));
  switch (step.kind) {
    case "string":
      if ((value as string).includes(NUL)) violation(at.clone().field(step.field));
      return;
    case "strings":
      (value as string[]).forEach((s, i) => {
        if (s.includes(NUL)) violation(at.clone().field(step.field).list(i));
      });
      return;
    case "message":
      if (value !== undefined)
        collect(value as object, step.plan, at.clone().field(step.field), out);
      return;
    case "messages":
      (value as object[]).forEach((v, i) => {
        collect(v, step.plan, at.clone().field(step.field).list(i), out);
      });
      return;
    case "map": {
      const entries = value as Fields;
      for (const key in entries) {
        const entry = at.clone().field(step.field).map(mapKey(step.field, key));
        if (step.stringKeys && key.includes(NUL)) violation(entry.clone(), true);
        const v = entries[key];
        if (step.stringValues && (v as string).includes(NUL)) violation(entry.clone());
        if (step.plan !== undefined) collect(v as object, step.plan, entry, out);
      }
      return;
    }
    case "oneof": {
      const { case: which, value: inner } = value as { case: string | undefined; value: unknown };
      const sub = which === undefined ? undefined : step.cases.get(which);
      if (sub !== undefined) collectStep(sub, inner, at, out);
      return;
    }
  }
}

/** A map key as the path wants it: object keys are strings, whatever the key type. */
function mapKey(field: DescField, key: string): string | number | bigint | boolean {
  if (field.fieldKind !== "map") return key;
  switch (field.mapKey) {
    case ScalarType.STRING:
      return key;
    case ScalarType.BOOL:
      return key === "true";
    case ScalarType.INT64:
    case ScalarType.UINT64:
    case ScalarType.SINT64:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return BigInt(key);
    default:
      return Number(key);
  }
}
