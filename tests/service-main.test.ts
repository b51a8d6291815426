import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import {
  createTestDatabase,
  openTestEvents,
  testRedisUrl,
  uniqueName,
} from "@meshmart/kit/testing";
import { listeningPorts } from "../scripts/lib/services.js";

// A service's main as the image and `make up` run it: config errors exit 1 with every
// bad variable named; SIGTERM drains and exits 0.
const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

function startMain(env: Record<string, string>) {
  const child = spawn(
    process.execPath,
    ["--conditions=development", "--import", "tsx", "services/catalog/src/main.ts"],
    { cwd: ROOT, env: { PATH: process.env.PATH ?? "", ...env }, stdio: ["ignore", "pipe", "pipe"] },
  );
  let out = "";
  child.stdout.on("data", (c: Buffer) => {
    out += c.toString();
  });
  child.stderr.on("data", (c: Buffer) => {
    out += c.toString();
  });
  return { child, output: () => out };
}

test("a bad environment exits 1 naming each bad variable, without their values", async () => {
  const { child, output } = startMain({
    SERVICE_NAME: "catalog",
    GRPC_PORT: "not-a-port",
    HTTP_PORT: "9202",
    DATABASE_URL: "mysql://user:pa55word@db/x",
  });
  const [code] = (await once(child, "exit")) as [number];
  assert.equal(code, 1);
  for (const name of ["GRPC_PORT", "ADMIN_PORT", "DATABASE_URL", "REDIS_URL"]) {
    assert.match(output(), new RegExp(`${name}:`));
  }
  assert.doesNotMatch(output(), /pa55word/);
});

test("SIGTERM after start drains and exits 0", async () => {
  const [db, events] = await Promise.all([
    createTestDatabase("catalog_main"),
    openTestEvents("main"),
  ]);
  try {
    // Port 0: the OS picks, the "listening" line tells; no port can be taken in between.
    const { child, output } = startMain({
      SERVICE_NAME: "catalog",
      GRPC_PORT: "0",
      HTTP_PORT: "0",
      ADMIN_PORT: "0",
      DATABASE_URL: db.url,
      REDIS_URL: await testRedisUrl(),
      CACHE_PREFIX: `${uniqueName("main")}:`,
      ...events.env,
    });
    const deadline = Date.now() + 30_000;
    for (;;) {
      const admin = output()
        .split("\n")
        .map(listeningPorts)
        .find((p) => p !== undefined)?.admin;
      const ready =
        admin === undefined
          ? 0
          : await fetch(`http://127.0.0.1:${admin}/readyz`).then(
              (r) => r.status,
              () => 0,
            );
      if (ready === 200) break;
      assert.ok(Date.now() < deadline && child.exitCode === null, `never ready:\n${output()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    child.kill("SIGTERM");
    const [code] = (await once(child, "exit")) as [number];
    assert.equal(code, 0, output());
    assert.match(output(), /"msg":"stopped serving"/);
  } finally {
    await db.drop();
    await events.close();
  }
});
