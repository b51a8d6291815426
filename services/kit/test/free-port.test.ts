import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { test } from "node:test";
import { freePort } from "@meshmart/kit/testing";

const PICKS = 400;

test("two processes never get the same port from freePort while both live", async () => {
  // The other process picks its ports and stays alive (holding them) until told to end,
  // as a mesh holds its ports while a killed service is down.
  const other = spawn(
    process.execPath,
    [
      "--conditions=development",
      "--import",
      "tsx",
      "--input-type=module",
      "-e",
      `import { freePort } from "@meshmart/kit/testing";
       const ports = [];
       for (let i = 0; i < ${PICKS}; i++) ports.push(await freePort());
       console.log(JSON.stringify(ports));
       process.stdin.resume();
       process.stdin.on("end", () => process.exit(0));`,
    ],
    { stdio: ["pipe", "pipe", "inherit"] },
  );
  try {
    let out = "";
    other.stdout.setEncoding("utf8");
    other.stdout.on("data", (chunk: string) => {
      out += chunk;
    });
    while (!out.includes("\n")) {
      await Promise.race([once(other.stdout, "data"), once(other, "exit")]);
      if (other.exitCode !== null) assert.fail(`the other process exited: ${other.exitCode}`);
    }
    const theirs = new Set(JSON.parse(out) as number[]);
    assert.equal(theirs.size, PICKS);
    const mine: number[] = [];
    for (let i = 0; i < PICKS; i++) mine.push(await freePort());
    // About seven shared ports are expected by chance alone (400 × 400 of ~22,700).
    assert.deepEqual(
      mine.filter((p) => theirs.has(p)),
      [],
    );
  } finally {
    other.stdin.end();
    await once(other, "exit");
  }
});
