/**
 * A synthetic proto file for unit tests: fields our public protos do not have (repeated,
 * enum, bool, int64, nested message) and methods to bind with any template.
 */
import { create, createFileRegistry, type DescMethod } from "@bufbuild/protobuf";
import {
  FileDescriptorProtoSchema,
  FieldDescriptorProto_Label as Label,
  FieldDescriptorProto_Type as Type,
} from "@bufbuild/protobuf/wkt";
import { type HttpBinding, parseTemplate } from "../../src/http-rules.js";

const field = (
  name: string,
  number: number,
  type: Type,
  extra: { repeated?: boolean; typeName?: string } = {},
) => ({
  name,
  number,
  type,
  jsonName: name.replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase()),
  label: extra.repeated ? Label.REPEATED : Label.OPTIONAL,
  ...(extra.typeName === undefined ? {} : { typeName: extra.typeName }),
});

const file = create(FileDescriptorProtoSchema, {
  name: "test/v1/synthetic.proto",
  package: "test.v1",
  syntax: "proto3",
  enumType: [
    {
      name: "Kind",
      value: [
        { name: "KIND_UNSPECIFIED", number: 0 },
        { name: "KIND_BOOK", number: 1 },
        { name: "KIND_MUSIC", number: 2 },
      ],
    },
  ],
  messageType: [
    {
      name: "Inner",
      field: [field("depth", 1, Type.INT32), field("label", 2, Type.STRING)],
    },
    {
      name: "Filter",
      field: [
        field("name", 1, Type.STRING),
        field("ids", 2, Type.STRING, { repeated: true }),
        field("kind", 3, Type.ENUM, { typeName: ".test.v1.Kind" }),
        field("active", 4, Type.BOOL),
        field("count", 5, Type.INT64),
        field("inner", 6, Type.MESSAGE, { typeName: ".test.v1.Inner" }),
        field("page_size", 7, Type.INT32),
        field("sizes", 8, Type.INT32, { repeated: true }),
      ],
    },
  ],
  service: [
    {
      name: "TestService",
      method: [{ name: "Do", inputType: ".test.v1.Filter", outputType: ".test.v1.Filter" }],
    },
  ],
});

const registry = createFileRegistry(file, () => undefined);

export const doMethod = registry.getService("test.v1.TestService")?.methods[0] as DescMethod;
export const filterSchema = doMethod.input;

/** A binding of the synthetic method. */
export function binding(
  httpMethod: string,
  template: string,
  body = "",
  responseBody = "",
): HttpBinding {
  return { httpMethod, template: parseTemplate(template), body, responseBody, method: doMethod };
}
