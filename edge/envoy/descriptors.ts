/**
 * Descriptor sets the Envoy generator and validator read:
 *  - meshmart's own (`buf build` of proto/ with imports and source info), the same file the
 *    deploy mounts at /etc/envoy/meshmart.binpb for grpc_json_transcoder;
 *  - Envoy's API (bootstrap + the extensions we reference), compiled by buf from the protos that
 *    ship inside @grpc/grpc-js-xds, cached in .build/ keyed by package version + file list.
 * Nothing third-party is copied into the repo: the Envoy protos are read from node_modules, and
 * the patched files (see patchValidateProto, patchLocalRateLimitProto) live only in a temporary directory.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createFileRegistry, type FileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const BUILD_DIR = join(REPO_ROOT, ".build");
export const MESHMART_DESCRIPTOR = join(BUILD_DIR, "meshmart.binpb");
export const ENVOY_API_DESCRIPTOR = join(BUILD_DIR, "envoy-api.binpb");
const BUF = join(REPO_ROOT, "node_modules/.bin/buf");
const XDS_PKG = join(REPO_ROOT, "node_modules/@grpc/grpc-js-xds");

/**
 * Envoy API files compiled into the validator's registry: the bootstrap plus every extension a
 * typed_config may name. A `@type` outside this closure is reported as an error, so using a new
 * extension in envoy.yaml means adding its proto here.
 */
export const ENVOY_API_PROTOS: readonly string[] = [
  "envoy/config/bootstrap/v3/bootstrap.proto",
  "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
  "envoy/extensions/filters/http/cors/v3/cors.proto",
  "envoy/extensions/filters/http/grpc_web/v3/grpc_web.proto",
  "envoy/extensions/filters/http/health_check/v3/health_check.proto",
  "envoy/extensions/filters/http/header_mutation/v3/header_mutation.proto",
  "envoy/extensions/filters/http/jwt_authn/v3/config.proto",
  "envoy/extensions/filters/http/local_ratelimit/v3/local_rate_limit.proto",
  "envoy/extensions/filters/http/grpc_json_transcoder/v3/transcoder.proto",
  "envoy/extensions/filters/http/router/v3/router.proto",
  "envoy/extensions/filters/http/buffer/v3/buffer.proto",
  "envoy/extensions/filters/http/lua/v3/lua.proto",
  "envoy/extensions/access_loggers/stream/v3/stream.proto",
  "envoy/extensions/access_loggers/file/v3/file.proto",
  "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
  "envoy/extensions/request_id/uuid/v3/uuid.proto",
  "envoy/extensions/resource_monitors/downstream_connections/v3/downstream_connections.proto",
];

/**
 * The validate.proto shipped in grpc-js-xds predates `StringRules.ignore_empty`, which the
 * shipped Envoy protos use (17 times). The temp workspace gets a copy with that one field added
 * (number 26, as upstream protoc-gen-validate numbers it); the copy is never written to the repo.
 */
function patchValidateProto(text: string): string {
  if (/ignore_empty\s*=/.test(text.slice(text.indexOf("message StringRules {")))) return text;
  return text.replace(
    "message StringRules {",
    "message StringRules {\n  optional bool ignore_empty = 26;",
  );
}

const LOCAL_RATE_LIMIT_PROTO =
  "envoy/extensions/filters/http/local_ratelimit/v3/local_rate_limit.proto";

/**
 * The Envoy protos shipped in grpc-js-xds predate two LocalRateLimit fields Envoy 1.40 has and
 * the edge uses for its per-client buckets: `rate_limits` (17: descriptors built by the filter
 * itself, after jwt_authn) and `max_dynamic_descriptors` (18: the cap on per-client buckets).
 * The temp workspace gets a copy with both added, numbered as upstream numbers them; Envoy's
 * own `--mode validate` (edge/envoy/test) is what vouches for them. Never written to the repo.
 */
function patchLocalRateLimitProto(text: string): string {
  if (/\brate_limits\s*=/.test(text)) return text;
  const end = text.lastIndexOf("}");
  return `${text
    .slice(0, end)
    .replace(
      'import "envoy/config/core/v3/base.proto";',
      'import "envoy/config/core/v3/base.proto";\nimport "envoy/config/route/v3/route_components.proto";',
    )}  repeated config.route.v3.RateLimit rate_limits = 17;\n  google.protobuf.UInt32Value max_dynamic_descriptors = 18;\n${text.slice(end)}`;
}

/** Bumped whenever a patch above changes, so the cached registry is rebuilt. */
const PATCHES_VERSION = "2";

function envoyCacheKey(): string {
  const pkg = JSON.parse(readFileSync(join(XDS_PKG, "package.json"), "utf8")) as {
    version: string;
  };
  return createHash("sha256")
    .update(
      `grpc-js-xds@${pkg.version}\npatches ${PATCHES_VERSION}\n${ENVOY_API_PROTOS.join("\n")}`,
    )
    .digest("hex");
}

/** Builds (or reuses from .build/) the Envoy API descriptor set and returns its bytes. */
export function envoyApiDescriptorBytes(): Uint8Array {
  const key = envoyCacheKey();
  const keyFile = `${ENVOY_API_DESCRIPTOR}.key`;
  if (
    existsSync(ENVOY_API_DESCRIPTOR) &&
    existsSync(keyFile) &&
    readFileSync(keyFile, "utf8") === key
  ) {
    return readFileSync(ENVOY_API_DESCRIPTOR);
  }
  const deps = join(XDS_PKG, "deps");
  const work = mkdtempSync(join(tmpdir(), "envoy-api-"));
  try {
    // A copy, not a link: one of its files is patched (6 MB, once per cache key).
    cpSync(join(deps, "envoy-api"), join(work, "envoy-api"), { recursive: true });
    const rateLimitProto = join(work, "envoy-api", LOCAL_RATE_LIMIT_PROTO);
    writeFileSync(rateLimitProto, patchLocalRateLimitProto(readFileSync(rateLimitProto, "utf8")));
    symlinkSync(join(deps, "xds"), join(work, "xds"));
    symlinkSync(join(deps, "googleapis"), join(work, "googleapis"));
    mkdirSync(join(work, "pgv/validate"), { recursive: true });
    const validate = readFileSync(
      join(deps, "protoc-gen-validate/validate/validate.proto"),
      "utf8",
    );
    writeFileSync(join(work, "pgv/validate/validate.proto"), patchValidateProto(validate));
    writeFileSync(
      join(work, "buf.yaml"),
      "version: v2\nmodules:\n  - path: envoy-api\n  - path: xds\n  - path: googleapis\n  - path: pgv\n",
    );
    const out = join(work, "out.binpb");
    const args = ["build", "--as-file-descriptor-set", "--exclude-source-info", "-o", out];
    for (const p of ENVOY_API_PROTOS) args.push("--path", `envoy-api/${p}`);
    execFileSync(BUF, args, { cwd: work, stdio: ["ignore", "ignore", "pipe"] });
    const bytes = readFileSync(out);
    mkdirSync(BUILD_DIR, { recursive: true });
    writeFileSync(ENVOY_API_DESCRIPTOR, bytes);
    writeFileSync(keyFile, key);
    return bytes;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

export function envoyApiRegistry(): FileRegistry {
  return createFileRegistry(fromBinary(FileDescriptorSetSchema, envoyApiDescriptorBytes()));
}

/**
 * `buf build` of our protos (imports + source info included: the transcoder needs the
 * google.api.http annotations and their imports). Requires .proto-deps/ (make generate).
 */
export function buildMeshmartDescriptor(out: string = MESHMART_DESCRIPTOR): void {
  if (!existsSync(join(REPO_ROOT, ".proto-deps"))) {
    throw new Error(
      ".proto-deps/ is missing: run `make generate` (scripts/materialize-protos.ts) first",
    );
  }
  mkdirSync(dirname(out), { recursive: true });
  execFileSync(BUF, ["build", "--as-file-descriptor-set", "-o", out], {
    cwd: REPO_ROOT,
    stdio: ["ignore", "ignore", "pipe"],
  });
}

export function meshmartRegistry(path: string = MESHMART_DESCRIPTOR): FileRegistry {
  if (!existsSync(path)) {
    throw new Error(
      `${path} is missing: run \`node_modules/.bin/buf build -o .build/meshmart.binpb\` first`,
    );
  }
  return createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(path)));
}
