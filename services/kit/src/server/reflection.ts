import { type DescFile, type DescService, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  type DescriptorProto,
  type FileDescriptorProto,
  FileDescriptorProtoSchema,
} from "@bufbuild/protobuf/wkt";
import type * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { protoPath as healthProtoPath } from "grpc-health-check";

/**
 * Serves grpc.reflection v1 and v1alpha from the descriptors the generated code already
 * carries (plus grpc.health.v1's), so grpcurl and `buf curl` work with no proto files.
 * @grpc/reflection reads a proto-loader PackageDefinition only for its
 * `fileDescriptorProtos`, so we hand it exactly that: every file the services need,
 * imports included, serialized once at start.
 */
export function addReflection(server: grpc.Server, services: readonly DescService[]): void {
  const files = new Map<string, Uint8Array>();
  const visit = (file: DescFile) => {
    if (files.has(file.name)) return;
    files.set(file.name, toBinary(FileDescriptorProtoSchema, file.proto));
    for (const dep of file.dependencies) visit(dep);
  };
  for (const service of services) visit(service.file);
  files.set("grpc/health/v1/health.proto", healthFileDescriptor());
  const definition: protoLoader.PackageDefinition = {
    "meshmart.reflection.files": {
      format: "Protocol Buffer 3 DescriptorProto",
      type: {},
      fileDescriptorProtos: [...files.values()].map((b) => Buffer.from(b)),
    } as unknown as protoLoader.PackageDefinition[string],
  };
  new ReflectionService(definition).addToServer(server);
}

/**
 * grpc.health.v1's descriptor, from the health.proto grpc-health-check ships. protobufjs
 * writes it with relative type names and a map entry not named `<Field>Entry`, which
 * protoc never produces and strict clients (buf curl, grpcurl) reject; this rewrites both
 * into the canonical form. The wire format is unchanged.
 */
function healthFileDescriptor(): Uint8Array {
  const loaded = protoLoader.loadSync(healthProtoPath, { keepCase: true });
  const entry = loaded["grpc.health.v1.HealthCheckRequest"] as { fileDescriptorProtos?: Buffer[] };
  const bytes = entry.fileDescriptorProtos?.[0];
  if (bytes === undefined) throw new Error("grpc-health-check ships no health descriptor");
  const file = fromBinary(FileDescriptorProtoSchema, bytes);
  canonicalize(file);
  return toBinary(FileDescriptorProtoSchema, file);
}

function canonicalize(file: FileDescriptorProto): void {
  const names = new Set<string>();
  const collect = (scope: string, messages: DescriptorProto[]) => {
    for (const m of messages) {
      if (m.options?.mapEntry === true && !m.name.endsWith("Entry")) m.name = `${m.name}Entry`;
      const fqn = `${scope}.${m.name}`;
      names.add(fqn);
      for (const e of m.enumType) names.add(`${fqn}.${e.name}`);
      collect(fqn, m.nestedType);
    }
  };
  const pkg = `.${file.package}`;
  collect(pkg, file.messageType);
  for (const e of file.enumType) names.add(`${pkg}.${e.name}`);
  const resolve = (scope: string, name: string): string => {
    if (name.startsWith(".")) return name;
    for (let s = scope; s !== ""; s = s.slice(0, s.lastIndexOf("."))) {
      for (const candidate of [`${s}.${name}`, `${s}.${name}Entry`]) {
        if (names.has(candidate)) return candidate;
      }
    }
    return name;
  };
  const fix = (scope: string, messages: DescriptorProto[]) => {
    for (const m of messages) {
      const fqn = `${scope}.${m.name}`;
      for (const f of m.field) if (f.typeName !== "") f.typeName = resolve(fqn, f.typeName);
      fix(fqn, m.nestedType);
    }
  };
  fix(pkg, file.messageType);
}
