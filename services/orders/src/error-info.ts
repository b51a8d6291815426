import { create, createFileRegistry, type DescMessage } from "@bufbuild/protobuf";
import {
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FileDescriptorProtoSchema,
} from "@bufbuild/protobuf/wkt";
import type { ConnectError } from "@connectrpc/connect";

// google.rpc.ErrorInfo is not among the generated files (proto/ never imports
// google/rpc/error_details.proto), so its descriptor is declared here, field for field as
// upstream defines it, to read the reasons inventory puts in its errors' details.
// TODO(kit): inventory declares the same descriptor; both belong in the kit.
const errorDetailsFile = create(FileDescriptorProtoSchema, {
  name: "google/rpc/error_details.proto",
  package: "google.rpc",
  syntax: "proto3",
  messageType: [
    {
      name: "ErrorInfo",
      field: [
        { name: "reason", number: 1, type: FieldDescriptorProto_Type.STRING, jsonName: "reason" },
        { name: "domain", number: 2, type: FieldDescriptorProto_Type.STRING, jsonName: "domain" },
        {
          name: "metadata",
          number: 3,
          label: FieldDescriptorProto_Label.REPEATED,
          type: FieldDescriptorProto_Type.MESSAGE,
          typeName: ".google.rpc.ErrorInfo.MetadataEntry",
          jsonName: "metadata",
        },
      ],
      nestedType: [
        {
          name: "MetadataEntry",
          options: { mapEntry: true },
          field: [
            { name: "key", number: 1, type: FieldDescriptorProto_Type.STRING, jsonName: "key" },
            { name: "value", number: 2, type: FieldDescriptorProto_Type.STRING, jsonName: "value" },
          ],
        },
      ],
    },
  ],
});

const errorInfoDesc: DescMessage | undefined = createFileRegistry(
  errorDetailsFile,
  () => undefined,
).getMessage("google.rpc.ErrorInfo");
if (errorInfoDesc === undefined) throw new Error("google.rpc.ErrorInfo descriptor did not build");

/** The google.rpc.ErrorInfo detail of an error: its reason and metadata. */
export interface ErrorInfo {
  reason: string;
  domain: string;
  metadata: Record<string, string>;
}

/** The first ErrorInfo in the error's details, if any. */
export function errorInfoOf(err: ConnectError): ErrorInfo | undefined {
  if (errorInfoDesc === undefined) return undefined;
  const [info] = err.findDetails(errorInfoDesc) as unknown as ErrorInfo[];
  return info;
}
