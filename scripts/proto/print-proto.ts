// Prints a google.protobuf.FileDescriptorProto back to .proto source.
//
// Used by scripts/materialize-protos.ts to turn the descriptor that an npm package embeds in its
// generated code (e.g. buf/validate/validate.proto inside @bufbuild/protovalidate) into a file buf
// can compile against, so nothing third-party is vendored into the repository.
//
// Covers what such files use: proto2/proto3 (editions are printed as proto2 with equivalent
// labels), imports, messages with nested types, enums, oneofs, map entries, proto3 optional,
// extension ranges, reserved ranges/names, extend blocks, defaults and services. Field, message
// and file options are dropped on purpose (the runtime validator reads the rules with its own
// copy of the schema); only map_entry and allow_alias are honoured because they change the syntax.
import { isFieldSet } from "@bufbuild/protobuf";
import {
  type DescriptorProto,
  type EnumDescriptorProto,
  FeatureSet_FieldPresence,
  type FieldDescriptorProto,
  FieldDescriptorProtoSchema,
  type FileDescriptorProto,
  FieldDescriptorProto_Label as Label,
  FieldDescriptorProto_Type as Type,
} from "@bufbuild/protobuf/wkt";

const MAX_FIELD_NUMBER = 536870911;
const MAX_ENUM_NUMBER = 2147483647;

const scalarNames: Partial<Record<Type, string>> = {
  [Type.DOUBLE]: "double",
  [Type.FLOAT]: "float",
  [Type.INT64]: "int64",
  [Type.UINT64]: "uint64",
  [Type.INT32]: "int32",
  [Type.FIXED64]: "fixed64",
  [Type.FIXED32]: "fixed32",
  [Type.BOOL]: "bool",
  [Type.STRING]: "string",
  [Type.BYTES]: "bytes",
  [Type.UINT32]: "uint32",
  [Type.SFIXED32]: "sfixed32",
  [Type.SFIXED64]: "sfixed64",
  [Type.SINT32]: "sint32",
  [Type.SINT64]: "sint64",
};

type Syntax = "proto2" | "proto3";

export function printFileDescriptor(file: FileDescriptorProto, header = ""): string {
  // Editions files are printed as proto2: explicit presence maps to `optional`,
  // LEGACY_REQUIRED to `required`. Field numbers and types are unchanged.
  const syntax: Syntax = file.syntax === "proto3" ? "proto3" : "proto2";
  const out: string[] = [];
  if (header) out.push(...header.split("\n").map((l) => `// ${l}`.trimEnd()), "");
  out.push(`syntax = "${syntax}";`, "", `package ${file.package};`, "");
  file.dependency.forEach((dep, i) => {
    const kind = file.publicDependency.includes(i)
      ? "public "
      : file.weakDependency.includes(i)
        ? "weak "
        : "";
    out.push(`import ${kind}"${dep}";`);
  });
  if (file.dependency.length > 0) out.push("");
  for (const m of file.messageType) out.push(...printMessage(m, syntax, file), "");
  for (const e of file.enumType) out.push(...printEnum(e), "");
  out.push(...printExtends(file.extension, syntax, file));
  for (const s of file.service) {
    out.push(`service ${s.name} {`);
    for (const m of s.method) {
      const cs = m.clientStreaming ? "stream " : "";
      const ss = m.serverStreaming ? "stream " : "";
      out.push(`  rpc ${m.name}(${cs}${m.inputType}) returns (${ss}${m.outputType});`);
    }
    out.push("}", "");
  }
  while (out.at(-1) === "") out.pop();
  return `${out.join("\n")}\n`;
}

const indent = (lines: string[]) => lines.map((l) => (l ? `  ${l}` : l));

function printMessage(m: DescriptorProto, syntax: Syntax, file: FileDescriptorProto): string[] {
  const body: string[] = [];
  const mapEntries = new Map(
    m.nestedType.filter((n) => n.options?.mapEntry).map((n) => [n.name, n] as const),
  );
  const printedOneofs = new Set<number>();
  for (const f of m.field) {
    const oneof = isFieldSet(f, FieldDescriptorProtoSchema.field.oneofIndex) && !f.proto3Optional;
    if (!oneof) {
      body.push(printField(f, syntax, file, mapEntries));
      continue;
    }
    if (printedOneofs.has(f.oneofIndex)) continue;
    printedOneofs.add(f.oneofIndex);
    body.push(`oneof ${m.oneofDecl[f.oneofIndex]?.name ?? `oneof_${f.oneofIndex}`} {`);
    for (const member of m.field) {
      if (
        isFieldSet(member, FieldDescriptorProtoSchema.field.oneofIndex) &&
        !member.proto3Optional &&
        member.oneofIndex === f.oneofIndex
      ) {
        body.push(`  ${printField(member, syntax, file, mapEntries, true)}`);
      }
    }
    body.push("}");
  }
  for (const n of m.nestedType)
    if (!n.options?.mapEntry) body.push(...printMessage(n, syntax, file));
  for (const e of m.enumType) body.push(...printEnum(e));
  body.push(...printExtends(m.extension, syntax, file));
  for (const r of m.extensionRange) body.push(`extensions ${range(r.start, r.end - 1)};`);
  if (m.reservedRange.length > 0) {
    body.push(`reserved ${m.reservedRange.map((r) => range(r.start, r.end - 1)).join(", ")};`);
  }
  if (m.reservedName.length > 0) {
    body.push(`reserved ${m.reservedName.map((n) => JSON.stringify(n)).join(", ")};`);
  }
  return [`message ${m.name} {`, ...indent(body), "}"];
}

function printEnum(e: EnumDescriptorProto): string[] {
  const body: string[] = [];
  if (e.options?.allowAlias) body.push("option allow_alias = true;");
  for (const v of e.value) body.push(`${v.name} = ${v.number};`);
  // EnumReservedRange.end is inclusive, unlike DescriptorProto.ReservedRange.end.
  if (e.reservedRange.length > 0) {
    body.push(
      `reserved ${e.reservedRange.map((r) => range(r.start, r.end, MAX_ENUM_NUMBER)).join(", ")};`,
    );
  }
  if (e.reservedName.length > 0) {
    body.push(`reserved ${e.reservedName.map((n) => JSON.stringify(n)).join(", ")};`);
  }
  return [`enum ${e.name} {`, ...indent(body), "}"];
}

function printExtends(exts: FieldDescriptorProto[], syntax: Syntax, file: FileDescriptorProto) {
  const byExtendee = new Map<string, FieldDescriptorProto[]>();
  for (const x of exts) byExtendee.set(x.extendee, [...(byExtendee.get(x.extendee) ?? []), x]);
  const out: string[] = [];
  for (const [extendee, fields] of byExtendee) {
    out.push(`extend ${extendee} {`);
    for (const f of fields) out.push(`  ${printField(f, syntax, file, new Map())}`);
    out.push("}", "");
  }
  return out;
}

function printField(
  f: FieldDescriptorProto,
  syntax: Syntax,
  file: FileDescriptorProto,
  mapEntries: Map<string, DescriptorProto>,
  inOneof = false,
): string {
  const entry = f.typeName ? mapEntries.get(f.typeName.split(".").at(-1) ?? "") : undefined;
  if (entry && f.label === Label.REPEATED) {
    const [k, v] = entry.field;
    if (!k || !v) throw new Error(`map entry ${entry.name} without key/value`);
    return `map<${typeName(k)}, ${typeName(v)}> ${f.name} = ${f.number};`;
  }
  if (f.type === Type.GROUP) throw new Error(`groups are not supported (${f.name})`);
  let label = "";
  if (!inOneof) {
    if (f.label === Label.REPEATED) label = "repeated ";
    else if (f.label === Label.REQUIRED) label = "required ";
    else if (file.syntax === "editions") {
      const presence = f.options?.features?.fieldPresence;
      label = presence === FeatureSet_FieldPresence.LEGACY_REQUIRED ? "required " : "optional ";
    } else if (syntax === "proto2" || f.proto3Optional) label = "optional ";
  }
  const dflt = isFieldSet(f, FieldDescriptorProtoSchema.field.defaultValue)
    ? ` [default = ${defaultLiteral(f)}]`
    : "";
  return `${label}${typeName(f)} ${f.name} = ${f.number}${dflt};`;
}

function typeName(f: FieldDescriptorProto): string {
  if (f.type === Type.MESSAGE || f.type === Type.ENUM) return f.typeName;
  const name = scalarNames[f.type];
  if (!name) throw new Error(`unknown field type ${f.type} (${f.name})`);
  return name;
}

function defaultLiteral(f: FieldDescriptorProto): string {
  if (f.type === Type.STRING) return JSON.stringify(f.defaultValue);
  // Descriptor defaults for bytes are already C-escaped.
  if (f.type === Type.BYTES) return `"${f.defaultValue}"`;
  return f.defaultValue;
}

function range(start: number, endInclusive: number, max = MAX_FIELD_NUMBER): string {
  if (endInclusive >= max) return `${start} to max`;
  return start === endInclusive ? `${start}` : `${start} to ${endInclusive}`;
}
