/**
 * `make deploy`: generate the graph-derived manifests, build and push the images (one per
 * service, the edge, the storefront), apply an overlay and istio/, wait for the rollout.
 *
 *   node --conditions=development --import tsx scripts/deploy/deploy.ts
 *
 * Environment:
 *   OVERLAY   dev | prod (default dev)
 *   REGISTRY  where images are pushed, e.g. registry.example.com/meshmart (required unless DRY_RUN)
 *   TAG       image tag (default: the git commit, -dirty when the tree has changes)
 *   DRY_RUN=1 render, validate and check everything and print the plan: no Docker, no cluster
 *   KUBECTL_CONTEXT  the kubectl context to apply to (default: the current one)
 *
 * Prerequisites of the real path (deploy/README.md): Istio >= 1.22 installed with
 * PILOT_JWT_ENABLE_REMOTE_JWKS=envoy, the Prometheus operator CRDs, the Secrets listed in
 * deploy/README.md, Docker logged in to REGISTRY.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { pathToFileURL } from "node:url";
import { stringify } from "yaml";
import { EDGE, loadCallGraph, REPO_ROOT, STOREFRONT } from "./callgraph.js";
import { checkAll, imagesOf } from "./checks.js";
import { generate } from "./generate.js";
import { imageOf, type K8sObject, workloads } from "./manifests.js";
import {
  countByKind,
  describe,
  ISTIO_DIR,
  kustomize,
  OVERLAYS,
  type Overlay,
  overlayDir,
  validateObjects,
} from "./render.js";

const say = (line = ""): void => {
  process.stdout.write(`${line}\n`);
};

/** What a deploy would apply, checked. */
export interface Plan {
  overlay: Overlay;
  /** The overlay's objects, then istio/'s, images rewritten to the registry. */
  objects: K8sObject[];
  trees: { name: string; objects: K8sObject[] }[];
  /** Local image name → pushed reference. */
  images: Map<string, string>;
  problems: string[];
}

/** Renders, validates and checks `overlay` + istio/ with images under `registry:tag`. */
export function plan(overlay: Overlay, registry: string, tag: string): Plan {
  const graph = loadCallGraph();
  const trees = [
    { name: `deploy/overlays/${overlay}`, objects: kustomize(overlayDir(overlay)) },
    { name: "istio", objects: kustomize(ISTIO_DIR) },
  ];
  const objects = trees.flatMap((t) => t.objects);
  const problems = [...validateObjects(objects), ...checkAll(objects, graph)];
  const images = new Map(
    workloads(graph).map((w) => [imageOf(w), `${registry.replace(/\/$/, "")}/${w}:${tag}`]),
  );
  const rewritten = rewriteImages(objects, images);
  return { overlay, objects: rewritten, trees, images, problems };
}

/** A copy of `objects` whose container images are replaced per `images`. */
export function rewriteImages(
  objects: readonly K8sObject[],
  images: ReadonlyMap<string, string>,
): K8sObject[] {
  return JSON.parse(
    JSON.stringify(objects, (key, value) =>
      key === "image" && typeof value === "string" ? (images.get(value) ?? value) : value,
    ),
  ) as K8sObject[];
}

/**
 * `docker build` arguments for a workload's image, from the root Dockerfile: the edge and
 * the storefront have their own targets; every service is the `service` target with its
 * name as SERVICE.
 */
export function buildArgs(workload: string): string[] {
  if (workload === EDGE || workload === STOREFRONT) return ["--target", workload];
  return ["--build-arg", `SERVICE=${workload}`, "--target", "service"];
}

/** The workload an image of `plan().images` is for: `meshmart/<workload>:latest`. */
const workloadOf = (local: string): string => local.split("/")[1]?.split(":")[0] ?? "";

function gitTag(): string {
  try {
    const sha = execFileSync("git", ["rev-parse", "--short=12", "HEAD"], {
      cwd: REPO_ROOT,
      encoding: "utf8",
    }).trim();
    const dirty = execFileSync("git", ["status", "--porcelain"], {
      cwd: REPO_ROOT,
      encoding: "utf8",
    });
    return dirty.trim() === "" ? sha : `${sha}-dirty`;
  } catch {
    return "dev";
  }
}

function run(command: string, args: string[], input?: string): void {
  say(`$ ${command} ${args.join(" ")}`);
  const result = spawnSync(command, args, {
    cwd: REPO_ROOT,
    stdio: [input === undefined ? "inherit" : "pipe", "inherit", "inherit"],
    ...(input === undefined ? {} : { input }),
  });
  if (result.status !== 0) throw new Error(`${command} ${args[0] ?? ""} failed (${result.status})`);
}

function printPlan(p: Plan, dryRun: boolean): void {
  say(`${dryRun ? "DRY RUN: would deploy" : "deploying"} overlay ${p.overlay}`);
  for (const tree of p.trees) {
    say(`\n${tree.name}: ${tree.objects.length} objects`);
    for (const [kind, n] of countByKind(tree.objects)) say(`  ${kind.padEnd(26)}${n}`);
  }
  say("\nimages:");
  for (const [local, pushed] of p.images) say(`  ${local.padEnd(34)}→ ${pushed}`);
  const external = imagesOf(p.objects).filter((i) => ![...p.images.values()].includes(i));
  for (const image of external) say(`  ${image.padEnd(34)}(pulled as is)`);
}

async function main(): Promise<number> {
  const env = process.env;
  const dryRun = env.DRY_RUN === "1" || env.DRY_RUN === "true";
  const overlay = (env.OVERLAY || "dev") as Overlay;
  if (!OVERLAYS.includes(overlay)) {
    console.error(`OVERLAY must be one of ${OVERLAYS.join(", ")}`);
    return 2;
  }
  const registry = env.REGISTRY || (dryRun ? "registry.invalid/meshmart" : "");
  if (registry === "") {
    console.error("REGISTRY is required (where the images are pushed), or DRY_RUN=1");
    return 2;
  }
  // Empty means unset: make passes every variable, set or not.
  const tag = env.TAG || gitTag();

  const changed = generate(false);
  say(
    changed.length === 0 ? "generated manifests up to date" : `regenerated ${changed.join(", ")}`,
  );

  const p = plan(overlay, registry, tag);
  printPlan(p, dryRun);
  if (p.problems.length > 0) {
    console.error(`\n${p.problems.length} problems; nothing applied:`);
    for (const problem of p.problems) console.error(`  ${problem}`);
    return 1;
  }
  say(`\nvalidated ${p.objects.length} objects against their schemas; every policy check passed`);
  const rollouts = p.objects.filter((o) => o.kind === "Deployment" || o.kind === "StatefulSet");
  const context = env.KUBECTL_CONTEXT ? ["--context", env.KUBECTL_CONTEXT] : [];
  if (dryRun) {
    say("\nwould run:");
    for (const [local, pushed] of p.images) {
      const build = buildArgs(workloadOf(local)).join(" ");
      say(`  docker build ${build} -t ${pushed} . && docker push ${pushed}`);
    }
    say(
      `  kubectl ${[...context, "apply", "--server-side", "-f", "-"].join(" ")}   (${p.objects.length} objects)`,
    );
    for (const o of rollouts)
      say(
        `  kubectl rollout status ${o.kind.toLowerCase()}/${o.metadata.name} -n ${o.metadata.namespace}`,
      );
    return 0;
  }

  for (const [local, pushed] of p.images) {
    run("docker", ["build", ...buildArgs(workloadOf(local)), "-t", pushed, "."]);
    run("docker", ["push", pushed]);
  }
  const manifest = p.objects.map((o) => stringify(o)).join("---\n");
  run(
    "kubectl",
    [...context, "apply", "--server-side", "--field-manager", "meshmart-deploy", "-f", "-"],
    manifest,
  );
  for (const o of rollouts) {
    run("kubectl", [
      ...context,
      "rollout",
      "status",
      `${o.kind.toLowerCase()}/${o.metadata.name}`,
      "-n",
      o.metadata.namespace ?? "default",
      "--timeout",
      "10m",
    ]);
  }
  say(`\ndeployed ${rollouts.length} workloads (${rollouts.map(describe).join(", ")})`);
  return 0;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  main().then(
    (code) => process.exit(code),
    (reason: unknown) => {
      console.error(reason instanceof Error ? reason.message : reason);
      process.exit(1);
    },
  );
}
