/**
 * What the code actually calls: every `createServiceClient(<Service>, …)` in
 * services/<name>/src, the name it is bound to, and the methods called through that name.
 * tests/deploy compares the result with deploy/callgraph.yaml both ways.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { REPO_ROOT, SERVICE_DESCRIPTORS } from "./callgraph.js";

/** One client a service constructs. */
export interface CodeClient {
  /** Fully qualified gRPC service, e.g. meshmart.catalog.v1.CatalogService. */
  grpcService: string;
  /** The property or variable the client is stored in. */
  binding: string;
  /** `file:line` of the construction. */
  at: string;
}

/** A service's outgoing gRPC use, as found in its sources. */
export interface CodeCalls {
  clients: CodeClient[];
  /** gRPC service → methods (proto names) called through its clients. */
  methods: Map<string, Set<string>>;
  /** Problems that make the scan unreliable (a client whose binding can't be found). */
  problems: string[];
}

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir)) {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) out.push(...sourceFiles(path));
    else if (entry.endsWith(".ts")) out.push(path);
  }
  return out;
}

// `name: createServiceClient(Desc, …)` or `const name = createServiceClient(Desc, …)`.
const CONSTRUCT = /(?:(\w+)\s*[:=]\s*)?createServiceClient\s*\(\s*(\w+)/g;

/** Scans `src` (default services/<service>/src). */
export function scanCodeCalls(
  service: string,
  src = join(REPO_ROOT, "services", service, "src"),
): CodeCalls {
  const files = sourceFiles(src).map((path) => ({ path, text: readFileSync(path, "utf8") }));
  const byShortName = new Map([...SERVICE_DESCRIPTORS.values()].map((d) => [d.name, d]));
  const clients: CodeClient[] = [];
  const problems: string[] = [];
  for (const { path, text } of files) {
    for (const m of text.matchAll(CONSTRUCT)) {
      const [, binding, descName] = m;
      const line = text.slice(0, m.index).split("\n").length;
      const at = `${path.slice(REPO_ROOT.length + 1)}:${line}`;
      // The function's own declaration or an import is not a construction.
      if (
        descName === undefined ||
        /^(function|import)\b/.test(text.slice(text.lastIndexOf("\n", m.index) + 1).trim())
      ) {
        continue;
      }
      const desc = byShortName.get(descName);
      if (desc === undefined) {
        problems.push(`${at}: createServiceClient(${descName}) is not a service of the mesh`);
        continue;
      }
      if (binding === undefined) {
        problems.push(
          `${at}: a ${desc.typeName} client is not stored under a name the scan can follow`,
        );
        continue;
      }
      clients.push({ grpcService: desc.typeName, binding, at });
    }
  }
  const methods = new Map<string, Set<string>>();
  for (const client of clients) {
    const desc = SERVICE_DESCRIPTORS.get(client.grpcService);
    if (desc === undefined) continue;
    const byLocal = new Map(desc.methods.map((m) => [m.localName, m.name]));
    const found = methods.get(client.grpcService) ?? new Set<string>();
    methods.set(client.grpcService, found);
    const call = new RegExp(`\\b${client.binding}\\s*\\.\\s*(\\w+)\\s*\\(`, "g");
    for (const { text } of files) {
      for (const m of text.matchAll(call)) {
        const method = byLocal.get(m[1] ?? "");
        if (method !== undefined) found.add(method);
      }
    }
  }
  return { clients, methods, problems };
}
