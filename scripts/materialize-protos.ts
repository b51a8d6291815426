// Materializes the third-party protos that proto/ imports into the git-ignored `.proto-deps/`,
// from installed npm packages only (the Buf Schema Registry is unreachable here and nothing
// third-party is vendored into the repository):
//
//   google/api/{annotations,http}.proto  copied from google-proto-files (plus what they import)
//   buf/validate/validate.proto           printed back from the FileDescriptorProto embedded in
//                                         @bufbuild/protovalidate's generated code
//
// buf.yaml lists `.proto-deps` as a second workspace module (not linted, not breaking-checked).
// google/protobuf/*.proto are well-known types that buf ships itself, so they are never copied.
//
// Idempotent: a file is only rewritten when its content changes, stray files are removed.
// Usage: node --import tsx scripts/materialize-protos.ts
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { file_buf_validate_validate } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { printFileDescriptor } from "./proto/print-proto.js";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const outDir = join(root, ".proto-deps");
const require = createRequire(import.meta.url);

/** Entry points copied from google-proto-files; their imports are followed. */
const GOOGLE_ENTRY_POINTS = ["google/api/annotations.proto", "google/api/http.proto"];

function googleProtos(): Map<string, string> {
  const base = dirname(require.resolve("google-proto-files/package.json"));
  const files = new Map<string, string>();
  const queue = [...GOOGLE_ENTRY_POINTS];
  for (let path = queue.shift(); path !== undefined; path = queue.shift()) {
    if (files.has(path) || path.startsWith("google/protobuf/")) continue;
    const text = readFileSync(join(base, path), "utf8");
    files.set(path, text);
    for (const m of text.matchAll(/^\s*import\s+(?:public\s+|weak\s+)?"([^"]+)"\s*;/gm)) {
      if (m[1]) queue.push(m[1]);
    }
  }
  return files;
}

function validateProto(): [string, string] {
  const fdp = file_buf_validate_validate.proto;
  const pkgVersion = packageVersion("@bufbuild/protovalidate");
  const header = [
    `Printed by scripts/materialize-protos.ts from the FileDescriptorProto of ${fdp.name}`,
    `embedded in @bufbuild/protovalidate ${pkgVersion}. Git-ignored; do not edit.`,
    "Field options and comments are not in the descriptor's printed form; the numbers, types",
    "and extensions are, which is what compiling `(buf.validate.field)` rules needs.",
  ].join("\n");
  return [fdp.name, printFileDescriptor(fdp, header)];
}

/** Version of an installed package whose "exports" hide package.json. */
function packageVersion(name: string): string {
  for (let dir = dirname(require.resolve(name)); dir !== dirname(dir); dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === name && pkg.version) return pkg.version;
    } catch {
      // no package.json at this level
    }
  }
  return "(unknown version)";
}

function listFiles(dir: string): string[] {
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return [];
  }
  return entries.flatMap((e) => {
    const p = join(dir, e);
    return statSync(p).isDirectory() ? listFiles(p) : [p];
  });
}

const wanted = new Map([...googleProtos(), validateProto()]);
let written = 0;
for (const [path, content] of wanted) {
  const target = join(outDir, path);
  let current: string | undefined;
  try {
    current = readFileSync(target, "utf8");
  } catch {
    current = undefined;
  }
  if (current === content) continue;
  mkdirSync(dirname(target), { recursive: true });
  writeFileSync(target, content);
  written++;
}
let removed = 0;
for (const file of listFiles(outDir)) {
  if (!wanted.has(relative(outDir, file).split("\\").join("/"))) {
    rmSync(file);
    removed++;
  }
}
process.stdout.write(
  `materialize-protos: ${relative(root, outDir)}/ has ${[...wanted.keys()].join(", ")} ` +
    `(${written} written, ${wanted.size - written} unchanged${removed ? `, ${removed} removed` : ""})\n`,
);
