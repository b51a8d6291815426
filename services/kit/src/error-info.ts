import {
  create,
  createFileRegistry,
  type DescMessage,
  type MessageShape,
} from "@bufbuild/protobuf";
import {
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FileDescriptorProtoSchema,
} from "@bufbuild/protobuf/wkt";
import { type Code, ConnectError } from "@connectrpc/connect";

// google.rpc.ErrorInfo is not among the generated files (proto/ never imports
// google/rpc/error_details.proto), so its descriptor is declared here, field for field as
// upstream defines it: the wire form, the Any type URL and JSON are those of the real
// message, and any client (grpcurl, Python, Go) decodes it with its own googleapis copy.
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

const errorInfoDesc = createFileRegistry(errorDetailsFile, () => undefined).getMessage(
  "google.rpc.ErrorInfo",
);
if (errorInfoDesc === undefined) throw new Error("google.rpc.ErrorInfo descriptor did not build");

/** Shape of google.rpc.ErrorInfo: a machine-readable reason, its domain and metadata. */
export interface ErrorInfo {
  reason: string;
  domain: string;
  metadata: Record<string, string>;
}

/** Descriptor of google.rpc.ErrorInfo, for `ConnectError.findDetails(ErrorInfoSchema)`. */
export const ErrorInfoSchema: DescMessage = errorInfoDesc;

/**
 * A ConnectError carrying a google.rpc.ErrorInfo detail: the machine-readable reason a
 * client branches on (the message is for people), in the service's domain.
 */
export function errorWithInfo(message: string, code: Code, info: ErrorInfo): ConnectError {
  const { reason, domain, metadata } = info;
  return new ConnectError(message, code, undefined, [
    { desc: ErrorInfoSchema, value: { reason, domain, metadata } },
  ]);
}

/** The ErrorInfo details of an error (clients and tests read the reason with it). */
export function errorInfosOf(err: ConnectError): ErrorInfo[] {
  return err
    .findDetails(ErrorInfoSchema)
    .map((m: MessageShape<DescMessage>) => m as unknown as ErrorInfo);
}
