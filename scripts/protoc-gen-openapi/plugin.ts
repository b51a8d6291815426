/**
 * Entry point of protoc-gen-openapi (buf/protoc plugin protocol on stdin/stdout). Run through
 * the `protoc-gen-openapi` shim next to this file; see buf.gen.openapi.yaml.
 */
import { runNodeJs } from "@bufbuild/protoplugin";
import { createOpenApiPlugin } from "./generate.js";

runNodeJs(createOpenApiPlugin());
