import assert from "node:assert/strict";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { type MakeUp, startMakeUp } from "./support/make-up.js";

// `make up MESH=1 REPLICAS=2`, the script the Makefile runs, on the test run's own infra:
// catalog twice behind its sidecars and the edge behind its own, all on free ports, with
// the sidecars listed and the edge's REST answered over mTLS between them.
let up: MakeUp;
let meshDir: string;
const output = () => up.output();

before(async () => {
  meshDir = mkdtempSync(join(tmpdir(), "meshmart-upmesh-"));
  up = await startMakeUp("upmesh", { MESH: "1", REPLICAS: "2", MESHMART_MESH_DIR: meshDir });
});

after(async () => {
  await up?.cleanUp();
  rmSync(meshDir, { recursive: true, force: true });
});

/** The admin URL `make up` printed for a sidecar. */
function sidecarAdmin(instance: string): string {
  const line = output()
    .split("\n")
    .find((l) => l.trimStart().startsWith(`${instance} (spiffe://`));
  const url = /admin (http:\/\/127\.0\.0\.1:\d+)/.exec(line ?? "")?.[1];
  assert.ok(url, `no sidecar line for ${instance} in:\n${output()}`);
  return url;
}

async function stat(adminUrl: string, name: string): Promise<number> {
  const text = await (await fetch(`${adminUrl}/stats`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name}: `));
  return Number(line?.slice(name.length + 2) ?? 0);
}

test("the summary names the sidecars: both catalog replicas and the edge's, each with its SPIFFE id", () => {
  const headline = output()
    .split("\n")
    .find((l) => l.startsWith("meshmart is up"));
  assert.match(headline ?? "", /\(MESH=1, 3 sidecars\)/);
  for (const [instance, account] of [
    ["catalog-0", "catalog"],
    ["catalog-1", "catalog"],
    ["edge-0", "edge"],
  ]) {
    assert.match(
      output(),
      new RegExp(`${instance} \\(spiffe://cluster\\.local/ns/meshmart/sa/${account}\\)`),
    );
  }
});

test("REST through the edge reaches catalog over mTLS, and the replicas share the load", async () => {
  const edge = /REST (http:\/\/127\.0\.0\.1:\d+)/.exec(output())?.[1];
  assert.ok(edge);
  for (let i = 0; i < 10; i += 1) {
    const res = await fetch(`${edge}/v1/products?page_size=2`);
    assert.equal(res.status, 200, await res.text());
  }
  const cluster = "cluster.outbound|9000||catalog.meshmart.svc.cluster.local";
  assert.ok((await stat(sidecarAdmin("edge-0"), `${cluster}.ssl.handshake`)) >= 1);
  // Each catalog sidecar serves its SPIFFE identity and took calls from the edge's.
  for (const instance of ["catalog-0", "catalog-1"]) {
    const certs = await (await fetch(`${sidecarAdmin(instance)}/certs`)).text();
    assert.match(certs, /spiffe:\/\/cluster\.local\/ns\/meshmart\/sa\/catalog/);
    assert.ok(
      (await stat(sidecarAdmin(instance), "http.inbound_9000.downstream_rq_total")) >= 1,
      `${instance} took no calls`,
    );
  }
});

test("Ctrl-C stops the apps, then their sidecars", async () => {
  up.process.kill("SIGINT");
  const [code] = await once(up.process, "exit");
  assert.equal(code, 0, output().slice(-3_000));
  const admin = sidecarAdmin("catalog-0");
  await assert.rejects(fetch(`${admin}/ready`), "catalog-0's sidecar is gone");
});
