/**
 * Renders the Kustomize trees with `kubectl kustomize` (apt: kubectl) and validates every
 * object against its schema: core kinds with kubernetes-models, Istio kinds with
 * @kubernetes-models/istio, the two Prometheus-operator kinds with the structural checks
 * below (their npm models, @kubernetes-models/prometheus-operator, are not installed).
 * A kind with no validator is an error, so a new kind can't slip through unchecked.
 */
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { DestinationRule } from "@kubernetes-models/istio/networking.istio.io/v1/DestinationRule";
import { Gateway } from "@kubernetes-models/istio/networking.istio.io/v1/Gateway";
import { Sidecar } from "@kubernetes-models/istio/networking.istio.io/v1/Sidecar";
import { VirtualService } from "@kubernetes-models/istio/networking.istio.io/v1/VirtualService";
import { AuthorizationPolicy } from "@kubernetes-models/istio/security.istio.io/v1/AuthorizationPolicy";
import { PeerAuthentication } from "@kubernetes-models/istio/security.istio.io/v1/PeerAuthentication";
import { RequestAuthentication } from "@kubernetes-models/istio/security.istio.io/v1/RequestAuthentication";
import { Telemetry } from "@kubernetes-models/istio/telemetry.istio.io/v1/Telemetry";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { StatefulSet } from "kubernetes-models/apps/v1/StatefulSet";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Namespace } from "kubernetes-models/v1/Namespace";
import { Secret } from "kubernetes-models/v1/Secret";
import { Service } from "kubernetes-models/v1/Service";
import { ServiceAccount } from "kubernetes-models/v1/ServiceAccount";
import { parseAllDocuments } from "yaml";
import { REPO_ROOT } from "./callgraph.js";
import type { K8sObject } from "./manifests.js";

/** The trees `make deploy` can apply: an overlay of deploy/ plus istio/. */
export const OVERLAYS = ["dev", "prod"] as const;
export type Overlay = (typeof OVERLAYS)[number];
export const ISTIO_DIR = join(REPO_ROOT, "istio");
export const overlayDir = (overlay: Overlay) => join(REPO_ROOT, "deploy/overlays", overlay);

/** `kubectl kustomize dir`, parsed. Throws when kubectl is missing or the tree is invalid. */
export function kustomize(dir: string): K8sObject[] {
  const text = execFileSync("kubectl", ["kustomize", dir], {
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
    stdio: ["ignore", "pipe", "pipe"],
  });
  return parseAllDocuments(text)
    .map((doc) => {
      if (doc.errors.length > 0) throw new Error(`${dir}: ${doc.errors[0]?.message}`);
      return doc.toJS() as K8sObject | null;
    })
    .filter((o): o is K8sObject => o !== null);
}

/** True when kubectl is on PATH. */
export function hasKubectl(): boolean {
  try {
    execFileSync("kubectl", ["version", "--client"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

type Validator = (obj: K8sObject) => void;
const model =
  <T extends { validate(): void }>(Model: new (data: never) => T): Validator =>
  (obj) => {
    new Model(obj as never).validate();
  };

/** apiVersion/kind → validator. */
export const VALIDATORS: ReadonlyMap<string, Validator> = new Map<string, Validator>([
  ["v1/Namespace", model(Namespace)],
  ["v1/ServiceAccount", model(ServiceAccount)],
  ["v1/ConfigMap", model(ConfigMap)],
  ["v1/Secret", model(Secret)],
  ["v1/Service", model(Service)],
  ["apps/v1/Deployment", model(Deployment)],
  ["apps/v1/StatefulSet", model(StatefulSet)],
  ["policy/v1/PodDisruptionBudget", model(PodDisruptionBudget)],
  ["autoscaling/v2/HorizontalPodAutoscaler", model(HorizontalPodAutoscaler)],
  ["networking.k8s.io/v1/NetworkPolicy", model(NetworkPolicy)],
  ["security.istio.io/v1/PeerAuthentication", model(PeerAuthentication)],
  ["security.istio.io/v1/RequestAuthentication", model(RequestAuthentication)],
  ["security.istio.io/v1/AuthorizationPolicy", model(AuthorizationPolicy)],
  ["networking.istio.io/v1/DestinationRule", model(DestinationRule)],
  ["networking.istio.io/v1/VirtualService", model(VirtualService)],
  ["networking.istio.io/v1/Gateway", model(Gateway)],
  ["networking.istio.io/v1/Sidecar", model(Sidecar)],
  ["telemetry.istio.io/v1/Telemetry", model(Telemetry)],
  ["monitoring.coreos.com/v1/ServiceMonitor", validateServiceMonitor],
  ["monitoring.coreos.com/v1/PrometheusRule", validatePrometheusRule],
]);

/** Object name for messages: `Kind namespace/name`. */
export function describe(obj: K8sObject): string {
  return `${obj.kind} ${obj.metadata.namespace ?? "-"}/${obj.metadata.name}`;
}

/** Validates each object; returns one message per invalid object (empty when all pass). */
export function validateObjects(objects: readonly K8sObject[]): string[] {
  const problems: string[] = [];
  for (const obj of objects) {
    const validator = VALIDATORS.get(`${obj.apiVersion}/${obj.kind}`);
    if (validator === undefined) {
      problems.push(`${describe(obj)}: no schema for ${obj.apiVersion}/${obj.kind}`);
      continue;
    }
    try {
      validator(obj);
    } catch (reason) {
      problems.push(`${describe(obj)}: ${reason instanceof Error ? reason.message : reason}`);
    }
  }
  return problems;
}

/** Objects per kind, sorted by kind. */
export function countByKind(objects: readonly K8sObject[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const o of objects) counts.set(o.kind, (counts.get(o.kind) ?? 0) + 1);
  return new Map([...counts].sort(([a], [b]) => a.localeCompare(b)));
}

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

// The fields the operator's CRD requires or that we rely on; unknown top-level spec fields
// are rejected so a typo fails here rather than being dropped by the API server.
function validateServiceMonitor(obj: K8sObject): void {
  const spec = obj.spec;
  if (!isRecord(spec)) throw new Error("spec is required");
  const known = new Set(["endpoints", "selector", "jobLabel", "namespaceSelector", "targetLabels"]);
  for (const k of Object.keys(spec)) if (!known.has(k)) throw new Error(`spec.${k} is unknown`);
  if (!isRecord(spec.selector)) throw new Error("spec.selector is required");
  if (!Array.isArray(spec.endpoints) || spec.endpoints.length === 0) {
    throw new Error("spec.endpoints must list at least one endpoint");
  }
  for (const [i, e] of spec.endpoints.entries()) {
    if (!isRecord(e)) throw new Error(`spec.endpoints[${i}] must be an object`);
    if (typeof e.port !== "string" && e.targetPort === undefined) {
      throw new Error(`spec.endpoints[${i}] needs port (a Service port name) or targetPort`);
    }
    if (e.scheme !== undefined && e.scheme !== "http" && e.scheme !== "https") {
      throw new Error(`spec.endpoints[${i}].scheme must be http or https`);
    }
  }
}

function validatePrometheusRule(obj: K8sObject): void {
  const spec = obj.spec;
  if (!isRecord(spec) || !Array.isArray(spec.groups)) throw new Error("spec.groups is required");
  for (const g of spec.groups) {
    if (!isRecord(g) || typeof g.name !== "string" || !Array.isArray(g.rules)) {
      throw new Error("each group needs a name and rules");
    }
    for (const r of g.rules) {
      if (!isRecord(r) || typeof r.expr !== "string")
        throw new Error(`${g.name}: rule without expr`);
      if (typeof r.alert !== "string" && typeof r.record !== "string") {
        throw new Error(`${g.name}: rule needs alert or record`);
      }
    }
  }
}
