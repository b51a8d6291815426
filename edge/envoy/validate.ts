/**
 * Strict validation of an Envoy bootstrap (YAML) with no Envoy binary: the YAML is decoded with
 * protobuf-es against Envoy's own API protos (from @grpc/grpc-js-xds, see descriptors.ts), so
 * unknown fields, bad enum values, malformed durations and `typed_config` Anys whose `@type` is
 * not a known Envoy type are errors; then cross-reference checks that the proto schema cannot
 * express (route → cluster, transcoder services → our descriptor set, jwt rules → providers, ...).
 *
 *   node --import tsx edge/envoy/validate.ts [edge/envoy/envoy.yaml] [--descriptor .build/meshmart.binpb]
 */
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import {
  type FileRegistry,
  fromJson,
  type JsonValue,
  type Registry,
  toJson,
} from "@bufbuild/protobuf";
import { parse } from "yaml";
import { envoyApiRegistry, MESHMART_DESCRIPTOR, meshmartRegistry } from "./descriptors.js";
import { DESCRIPTOR_MOUNT_PATH, ENVOY_YAML } from "./generate.js";

export interface ValidateOptions {
  /** Envoy API registry; built/cached from @grpc/grpc-js-xds when omitted. */
  envoyRegistry?: FileRegistry;
  /** meshmart descriptor set, for the transcoder's `services`. */
  meshmartRegistry?: FileRegistry;
  /** Path the deploy mounts the descriptor set at (default /etc/envoy/meshmart.binpb). */
  descriptorMountPath?: string;
}

export interface ValidateResult {
  errors: string[];
}

const T = {
  hcm: "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
  router: "envoy.extensions.filters.http.router.v3.Router",
  transcoder: "envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
  jwt: "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
  cors: "envoy.extensions.filters.http.cors.v3.Cors",
  health: "envoy.extensions.filters.http.health_check.v3.HealthCheck",
  httpOptions: "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
} as const;

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);
const obj = (v: unknown): Obj => (isObj(v) ? v : {});
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const str = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined);
const typeOf = (any: unknown): string => (str(obj(any)["@type"]) ?? "").replace(/^.*\//, "");

let cachedEnvoy: FileRegistry | undefined;

/** `/package.Service/` or `/package.Service/Method`: what gRPC, gRPC-Web and Connect call. */
const RPC_PATH = /^\/[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+\/([A-Za-z_][\w]*)?$/;

/** A route that reaches a service by its RPC path. */
interface RpcRoute {
  name: string;
  match: string;
  /** A `path` match (one method) rather than a `prefix` (a whole service). */
  exact: boolean;
}

export function validateEnvoyConfig(yamlText: string, opts: ValidateOptions = {}): ValidateResult {
  const errors: string[] = [];
  let raw: unknown;
  try {
    raw = parse(yamlText);
  } catch (e) {
    return { errors: [`YAML: ${(e as Error).message}`] };
  }
  if (!isObj(raw))
    return { errors: ["YAML: top level must be a mapping (envoy.config.bootstrap.v3.Bootstrap)"] };

  if (!opts.envoyRegistry && !cachedEnvoy) cachedEnvoy = envoyApiRegistry();
  const registry = opts.envoyRegistry ?? (cachedEnvoy as FileRegistry);
  const bootstrapDesc = registry.getMessage("envoy.config.bootstrap.v3.Bootstrap");
  if (!bootstrapDesc)
    return { errors: ["Envoy API registry lacks envoy.config.bootstrap.v3.Bootstrap"] };

  // 1. Schema: strict decode, then re-encode to canonical proto-named JSON for the checks below.
  let canon: Obj;
  try {
    const msg = fromJson(bootstrapDesc, raw as JsonValue, { registry, ignoreUnknownFields: false });
    canon = obj(toJson(bootstrapDesc, msg, { registry, useProtoFieldName: true }));
  } catch (e) {
    return { errors: [`schema: ${(e as Error).message}`] };
  }

  // 2. Cross references.
  const sr = obj(canon.static_resources);
  const clusters = arr(sr.clusters).map(obj);
  const clusterNames = new Set<string>();
  for (const c of clusters) {
    const name = str(c.name) ?? "";
    if (!name) errors.push("cluster without a name");
    else if (clusterNames.has(name)) errors.push(`cluster "${name}" is defined twice`);
    clusterNames.add(name);
  }
  const used = new Set<string>();
  const useCluster = (name: string | undefined, where: string) => {
    if (name === undefined) return;
    used.add(name);
    if (!clusterNames.has(name))
      errors.push(`${where}: cluster "${name}" is not defined in static_resources.clusters`);
  };

  const adminSock = obj(obj(obj(canon.admin).address).socket_address);
  const ports = new Map<string, string>();
  if (adminSock.port_value !== undefined)
    ports.set(`${adminSock.address}:${adminSock.port_value}`, "admin");
  for (const l of arr(sr.listeners).map(obj)) {
    const lname = str(l.name) ?? "(unnamed listener)";
    const sock = obj(obj(l.address).socket_address);
    const key = `${sock.address}:${sock.port_value}`;
    const samePort = [...ports.entries()].find(
      ([k]) => k.split(":").pop() === String(sock.port_value),
    );
    if (samePort)
      errors.push(`listener "${lname}": port ${sock.port_value} is already used by ${samePort[1]}`);
    ports.set(key, `listener "${lname}"`);
    for (const chain of arr(l.filter_chains).map(obj)) {
      for (const f of arr(chain.filters).map(obj)) {
        if (typeOf(f.typed_config) === T.hcm) checkHcm(obj(f.typed_config), `listener "${lname}"`);
      }
    }
  }

  function checkHcm(hcm: Obj, where: string): void {
    const filters = arr(hcm.http_filters).map(obj);
    const names = filters.map((f) => str(f.name) ?? "");
    const types = filters.map((f) => typeOf(f.typed_config));
    if (filters.length === 0) errors.push(`${where}: http_filters is empty`);
    else if (types[types.length - 1] !== T.router)
      errors.push(`${where}: http_filters must end with the router`);
    if (types.filter((t) => t === T.router).length > 1)
      errors.push(`${where}: more than one router filter`);
    names.forEach((n, i) => {
      if (names.indexOf(n) !== i) errors.push(`${where}: http filter name "${n}" is used twice`);
      if (!filters[i]?.typed_config)
        errors.push(`${where}: http filter "${n}" has no typed_config`);
    });
    const pos = (t: string) => types.indexOf(t);
    const jwtAt = pos(T.jwt);
    if (jwtAt >= 0) {
      if (pos(T.transcoder) > jwtAt)
        errors.push(
          `${where}: jwt_authn must come after grpc_json_transcoder (its rules match gRPC method paths)`,
        );
      if (pos(T.cors) > jwtAt)
        errors.push(`${where}: cors must come before jwt_authn (preflight has no token)`);
      if (pos(T.health) > jwtAt) errors.push(`${where}: health_check must come before jwt_authn`);
    }

    const rc = obj(hcm.route_config);
    const routePrefixes: string[] = [];
    const rpcRoutes: RpcRoute[] = [];
    for (const vh of arr(rc.virtual_hosts).map(obj)) {
      const vname = `${where} virtual_host "${str(vh.name) ?? ""}"`;
      checkPerFilter(vh.typed_per_filter_config, vname, names);
      for (const r of arr(vh.routes).map(obj)) {
        const rname = `${vname} route "${str(r.name) ?? JSON.stringify(r.match)}"`;
        checkPerFilter(r.typed_per_filter_config, rname, names);
        const action = obj(r.route);
        useCluster(str(action.cluster), rname);
        for (const wc of arr(obj(action.weighted_clusters).clusters).map(obj))
          useCluster(str(wc.name), rname);
        const m = obj(r.match);
        const p = str(m.prefix) ?? str(m.path);
        if (p !== undefined) routePrefixes.push(p);
        if (p !== undefined && RPC_PATH.test(p) && str(action.cluster) !== undefined) {
          rpcRoutes.push({ name: rname, match: p, exact: str(m.path) !== undefined });
        }
      }
    }

    for (const f of filters) {
      const tc = obj(f.typed_config);
      const fname = `${where} filter "${str(f.name) ?? ""}"`;
      if (typeOf(tc) === T.transcoder) checkTranscoder(tc, fname, routePrefixes);
      if (typeOf(tc) === T.jwt) checkJwt(tc, fname, rpcRoutes);
    }
  }

  function checkPerFilter(tpfc: unknown, where: string, filterNames: string[]): void {
    for (const key of Object.keys(obj(tpfc))) {
      if (!filterNames.includes(key))
        errors.push(
          `${where}: typed_per_filter_config key "${key}" names no filter in http_filters`,
        );
    }
  }

  function checkTranscoder(tc: Obj, where: string, routePrefixes: string[]): void {
    const mount = opts.descriptorMountPath ?? DESCRIPTOR_MOUNT_PATH;
    if (str(tc.proto_descriptor) !== mount) {
      errors.push(
        `${where}: proto_descriptor is ${JSON.stringify(tc.proto_descriptor)}, the deploy mounts ${mount}`,
      );
    }
    let ours: Registry | undefined;
    try {
      ours = opts.meshmartRegistry ?? meshmartRegistry(MESHMART_DESCRIPTOR);
    } catch (e) {
      errors.push(`${where}: cannot check services: ${(e as Error).message}`);
    }
    const services = arr(tc.services).map((s) => String(s));
    if (services.length === 0) errors.push(`${where}: services is empty`);
    for (const s of services) {
      if (ours && !ours.getService(s))
        errors.push(`${where}: transcoder service "${s}" is not in the descriptor set`);
      if (!routePrefixes.some((p) => p === "/" || p.startsWith(`/${s}/`)))
        errors.push(`${where}: transcoder service "${s}" has no route for /${s}/`);
    }
  }

  /** Whether a requirement is met by a call without a (valid) token. */
  function lets(req: unknown): boolean {
    const r = obj(req);
    if (isObj(r.allow_missing) || isObj(r.allow_missing_or_failed)) return true;
    return arr(obj(r.requires_any).requirements).some(lets);
  }

  function checkJwt(tc: Obj, where: string, rpcRoutes: RpcRoute[]): void {
    const providers = obj(tc.providers);
    for (const [pname, p] of Object.entries(providers)) {
      const jwks = obj(obj(p).remote_jwks);
      if (isObj(obj(p).remote_jwks))
        useCluster(str(obj(jwks.http_uri).cluster), `${where} provider "${pname}" remote_jwks`);
    }
    const reqNames = new Set(Object.keys(obj(tc.requirement_map)));
    const checkReq = (req: unknown, at: string): void => {
      const r = obj(req);
      const pn = str(r.provider_name) ?? str(obj(r.provider_and_audiences).provider_name);
      if (pn !== undefined && !(pn in providers))
        errors.push(`${at}: jwt provider "${pn}" is not defined in providers`);
      for (const sub of [
        ...arr(obj(r.requires_any).requirements),
        ...arr(obj(r.requires_all).requirements),
      ])
        checkReq(sub, at);
    };
    for (const [name, req] of Object.entries(obj(tc.requirement_map)))
      checkReq(req, `${where} requirement_map "${name}"`);
    const rules = arr(tc.rules).map(obj);
    rules.forEach((rule, i) => {
      const at = `${where} rule ${i} (${JSON.stringify(rule.match)})`;
      checkReq(rule.requires, at);
      const rn = str(rule.requirement_name);
      if (rn !== undefined && !reqNames.has(rn))
        errors.push(`${at}: requirement_name "${rn}" is not in requirement_map`);
    });
    // Deny by default: every route to a service is covered by a rule that requires a token,
    // but for the methods a rule names exactly and leaves open (the public ones). The rest of
    // the edge (storefront, /openapi.json, /healthz) is public on purpose, so there is no
    // catch-all rule to look for.
    const requiring = (r: Obj) =>
      (r.requires !== undefined && !lets(r.requires)) || r.requirement_name !== undefined;
    for (const route of rpcRoutes) {
      const first = rules.find((r) => {
        const m = obj(r.match);
        const prefix = str(m.prefix);
        if (prefix !== undefined) return route.match.startsWith(prefix);
        return route.exact && str(m.path) === route.match;
      });
      if (first === undefined) {
        errors.push(
          `${route.name}: no jwt rule covers ${route.match}, so it needs no token (deny by default)`,
        );
      }
    }
    for (const rule of rules) {
      const m = obj(rule.match);
      if (!requiring(rule) && str(m.path) === undefined) {
        errors.push(
          `${where}: a rule that lets calls without a token through must name one method by path, not ${JSON.stringify(rule.match)}`,
        );
      }
    }
  }

  for (const c of clusters) {
    const name = str(c.name) ?? "";
    const hcs = arr(c.health_checks).map(obj);
    if (hcs.some((h) => isObj(h.grpc_health_check))) {
      const opt = obj(obj(c.typed_extension_protocol_options)[T.httpOptions]);
      const h2 =
        isObj(obj(opt.explicit_http_config).http2_protocol_options) ||
        isObj(opt.use_downstream_protocol_config);
      if (!h2)
        errors.push(
          `cluster "${name}": grpc_health_check needs HTTP/2 (HttpProtocolOptions explicit_http_config)`,
        );
    }
    for (const key of Object.keys(obj(c.typed_extension_protocol_options))) {
      const tcfg = obj(obj(c.typed_extension_protocol_options)[key]);
      if (typeOf(tcfg) !== key)
        errors.push(
          `cluster "${name}": typed_extension_protocol_options key "${key}" does not match its @type`,
        );
    }
    if (!used.has(name))
      errors.push(`cluster "${name}" is never referenced by a route or jwt provider`);
  }
  return { errors };
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { descriptor: { type: "string", default: MESHMART_DESCRIPTOR } },
  });
  const file = positionals[0] ?? ENVOY_YAML;
  const { errors } = validateEnvoyConfig(readFileSync(file, "utf8"), {
    meshmartRegistry: meshmartRegistry(values.descriptor),
  });
  for (const e of errors) process.stderr.write(`${file}: ${e}\n`);
  if (errors.length > 0) process.exit(1);
  process.stdout.write(`${file}: valid\n`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
