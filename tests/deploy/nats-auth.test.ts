import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import {
  type OwnedNats,
  startOwnedNats,
  testPostgresUrl,
  testRedisUrl,
  uniqueName,
  waitFor,
} from "@meshmart/kit/testing";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { parseAllDocuments } from "yaml";
import { loadCallGraph, REPO_ROOT } from "../../scripts/deploy/callgraph.js";
import {
  NATS_OPS_USER,
  natsAuthConf,
  natsPasswordVariable,
  natsPermissions,
} from "../../scripts/deploy/nats-auth.js";
import { type Mesh, startMesh } from "../support/mesh.js";
import { createRestCall } from "../support/rest.js";

// The NATS permissions generated from deploy/callgraph.yaml, enforced by a real
// nats-server: the whole store works under them (an order confirms, notifications
// consume, inventory learns products), and what the graph does not grant is refused.
const graph = loadCallGraph();
const namespace = uniqueName("na").slice(0, 32);
const users = [...natsPermissions(graph).keys(), NATS_OPS_USER];
// Digits first on purpose: nats-server parses a bare variable's value as a config value,
// so an unquoted "9…" is a number and the server fails to start. The StatefulSet quotes it.
const passwords = new Map(users.map((u) => [u, `9${randomBytes(12).toString("hex")}`]));
let dir: string;
let nats: OwnedNats;
let mesh: Mesh;
const opened: NatsConnection[] = [];

const urlFor = (user: string) => `nats://${user}:${passwords.get(user)}@127.0.0.1:${nats.port}`;

async function as(user: string): Promise<NatsConnection> {
  const nc = await connect({
    servers: `127.0.0.1:${nats.port}`,
    user,
    pass: passwords.get(user) ?? "",
  });
  opened.push(nc);
  return nc;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "meshmart-nats-auth-"));
  await writeFile(
    join(dir, "auth.conf"),
    natsAuthConf(graph, { namespace, includeLocalOnly: true }),
  );
  await writeFile(join(dir, "nats.conf"), "include ./auth.conf\n");
  nats = await startOwnedNats({
    config: {
      file: join(dir, "nats.conf"),
      env: Object.fromEntries(
        users.map((u) => [natsPasswordVariable(u), JSON.stringify(passwords.get(u) ?? "")]),
      ),
    },
  });
  mesh = await startMesh({
    label: "nats_auth",
    edge: true,
    infra: {
      postgresUrl: await testPostgresUrl(),
      redisUrl: await testRedisUrl(),
      natsUrl: urlFor(NATS_OPS_USER),
    },
    env: { EVENTS_NAMESPACE: namespace },
    serviceEnv: Object.fromEntries(
      [...natsPermissions(graph).keys()].map((svc) => [svc, { NATS_URL: urlFor(svc) }]),
    ),
  });
});

after(async () => {
  for (const s of ["catalog", "inventory", "orders", "notifications", "identity", "payments"])
    console.error(`== ${s}\n${mesh?.output(s)}`);
  for (const nc of opened) await nc.close().catch(() => {});
  await mesh?.stop();
  await nats?.dispose();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

const rest = createRestCall(() => mesh.edgeUrl);

test("under the generated permissions an order confirms and every consumer gets its events", async () => {
  const email = `nats-${randomUUID()}@example.com`;
  const password = "correct horse battery staple";
  await rest("POST", "/v1/users", { email, password, displayName: "Nats" });
  const { accessToken } = await rest("POST", "/v1/sessions", { email, password });
  const { products } = await rest("GET", "/v1/products?page_size=1");
  const placed = await waitFor(
    "stock that inventory learned from catalog's events",
    async () => {
      try {
        return await rest(
          "POST",
          "/v1/orders",
          {
            requestId: randomUUID(),
            items: [{ productId: products[0].id, quantity: 1 }],
            payment: {
              card: { number: "4242424242424242", expMonth: 12, expYear: 2030, cvc: "123" },
            },
          },
          accessToken,
        );
      } catch {
        return undefined;
      }
    },
    30_000,
  );
  const done = await waitFor(
    "the order to confirm",
    async () => {
      const { order } = await rest("GET", `/v1/orders/${placed.order.id}`, undefined, accessToken);
      return order.status === "ORDER_STATUS_PENDING" ? undefined : order;
    },
    30_000,
  );
  assert.equal(done.status, "ORDER_STATUS_CONFIRMED");
  // notifications consumed identity's UserSignedUp and orders' OrderConfirmed.
  const kinds = await waitFor(
    "the welcome and the confirmation",
    async () => {
      const { notifications } = await rest("GET", "/v1/notifications", undefined, accessToken);
      return notifications.length === 2
        ? notifications.map((n: { kind: string }) => n.kind).sort()
        : undefined;
    },
    30_000,
  );
  assert.deepEqual(kinds, ["NOTIFICATION_KIND_ORDER_CONFIRMED", "NOTIFICATION_KIND_WELCOME"]);
  for (const svc of natsPermissions(graph).keys()) {
    const output = mesh.output(svc);
    assert.doesNotMatch(output, /[Pp]ermissions [Vv]iolation/, `${svc}: ${output}`);
    for (const secret of passwords.values())
      assert.ok(!output.includes(secret), `${svc} logged a password`);
  }
});

test("what the graph does not grant is refused: forged events, other streams, others' events", async () => {
  const ops = await as(NATS_OPS_USER);
  const seen: string[] = [];
  const watch = ops.subscribe(`${namespace}.>`, {
    callback: (_err, msg) => {
      seen.push(msg.subject);
    },
  });
  await ops.flush();

  // notifications may not publish payments' events.
  const notifications = await as("notifications");
  notifications.publish(`${namespace}.payments.payment.captured`, "forged");
  await notifications.flush().catch(() => {});
  // payments may not read identity's events as they fly by.
  const payments = await as("payments");
  const spied: string[] = [];
  const refusals: string[] = [];
  payments.subscribe(`${namespace}.identity.>`, {
    callback: (err, msg) => {
      if (err !== null) refusals.push(err.message);
      else spied.push(msg.subject);
    },
  });
  await payments.flush().catch(() => {});
  ops.publish(`${namespace}.identity.user.signed_up`, "probe");
  await ops.flush();
  await new Promise((resolve) => setTimeout(resolve, 500));
  assert.ok(!seen.includes(`${namespace}.payments.payment.captured`), "a forged event got through");
  assert.deepEqual(spied, []);
  assert.match(refusals.join("\n"), /permissions violation/i);

  // payments may not delete (or read) the ORDERS stream.
  const jsm = await jetstreamManager(await as("payments"), { timeout: 2_000 });
  const orders = `${namespace.toUpperCase()}_ORDERS`;
  await assert.rejects(jsm.streams.delete(orders));
  await assert.rejects(jsm.streams.info(orders));
  // ops can, and the stream is still there.
  assert.equal((await (await jetstreamManager(ops)).streams.info(orders)).config.name, orders);
  watch.unsubscribe();
});

test("the manifests wire every NATS user: its password in the server's env, quoted; its URL in the service's", () => {
  const docs = (file: string) =>
    parseAllDocuments(readFileSync(join(REPO_ROOT, file), "utf8")).map(
      // biome-ignore lint/suspicious/noExplicitAny: manifests are checked field by field.
      (d) => d.toJS() as any,
    );
  const statefulSet = docs("deploy/base/infra/nats.yaml").find((d) => d?.kind === "StatefulSet");
  const container = statefulSet.spec.template.spec.containers.find(
    (c: { name: string }) => c.name === "nats",
  );
  const env: { name: string; value?: string; valueFrom?: unknown }[] = container.env;
  const index = (name: string) => env.findIndex((e) => e.name === name);
  for (const user of users) {
    const variable = natsPasswordVariable(user);
    const raw = variable.replace("NATS_PASSWORD_", "NATS_RAW_PASSWORD_");
    assert.deepEqual(env[index(raw)]?.valueFrom, {
      secretKeyRef: { name: "nats-service-passwords", key: user },
    });
    assert.equal(env[index(variable)]?.value, `"$(${raw})"`, variable);
    assert.ok(index(raw) < index(variable), `${raw} must come before ${variable}`);
  }
  const sources = statefulSet.spec.template.spec.volumes.find(
    (v: { name: string }) => v.name === "config",
  ).projected.sources;
  assert.ok(
    sources.some((s: { configMap?: { name: string } }) => s.configMap?.name === "nats-auth"),
  );
  const baseConf = docs("deploy/base/infra/nats.yaml").find(
    (d) => d?.metadata?.name === "nats-config",
  ).data["nats.conf"];
  assert.match(baseConf, /^include \.\/auth\.conf$/m);
  assert.match(
    readFileSync(join(REPO_ROOT, "deploy/overlays/dev/kustomization.yaml"), "utf8"),
    /^\s+include \.\/auth\.conf$/m,
  );

  const deployments = docs("deploy/base/services.generated.yaml").filter(
    (d) => d?.kind === "Deployment",
  );
  for (const svc of natsPermissions(graph).keys()) {
    const deployment = deployments.find((d) => d.metadata.name === svc);
    const serviceEnv: { name: string; value?: string }[] =
      deployment.spec.template.spec.containers[0].env;
    const url = serviceEnv.find((e) => e.name === "NATS_URL")?.value ?? "";
    assert.match(url, new RegExp(`^nats://${svc}:\\$\\(NATS_PASSWORD\\)@`), svc);
  }
});
