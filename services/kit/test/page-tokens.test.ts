import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { ViolationsSchema } from "../gen/buf/validate/validate_pb.js";
import { ListProductsRequestSchema } from "../gen/meshmart/catalog/v1/catalog_service_pb.js";
import { ListOrdersRequestSchema } from "../gen/meshmart/orders/v1/orders_service_pb.js";
import { ConfigError, kitConfigSchema, loadConfig } from "../src/config.js";
import { createPageTokens } from "../src/page-tokens.js";
import { createRuntime } from "../src/runtime.js";
import { createLogSink } from "../src/testing/log-sink.js";

const field = ListProductsRequestSchema.field.pageToken;

/** The (path, rule) of the violation an INVALID_ARGUMENT carries. */
function violation(fn: () => unknown): { path: string; rule: string } {
  try {
    fn();
  } catch (reason) {
    assert.ok(reason instanceof ConnectError);
    assert.equal(reason.code, Code.InvalidArgument);
    const [detail] = reason.findDetails(ViolationsSchema);
    const [v] = detail?.violations ?? [];
    return {
      path: (v?.field?.elements ?? []).map((e) => e.fieldName).join("."),
      rule: v?.ruleId ?? "",
    };
  }
  assert.fail("expected INVALID_ARGUMENT");
}

test("a token opens to its cursor, only in its own listing", () => {
  const tokens = createPageTokens(randomBytes(32), field);
  const token = tokens.issue({ n: "Kettle", i: "42" }, "brewing|");
  assert.deepEqual(tokens.open(token, "brewing|", ["n", "i"]), { n: "Kettle", i: "42" });
  assert.deepEqual(
    violation(() => tokens.open(token, "lighting|", ["n", "i"])),
    {
      path: "page_token",
      rule: "page_token.listing",
    },
  );
});

test("a forged, altered or garbled token is INVALID_ARGUMENT naming page_token", () => {
  const key = randomBytes(32);
  const tokens = createPageTokens(key, field);
  const token = tokens.issue({ n: "Kettle", i: "42" }, "");
  const [payload, mac] = token.split(".") as [string, string];
  const forgedPayload = Buffer.from(
    JSON.stringify({
      c: { n: "Zzz", i: "99" },
      l: JSON.parse(Buffer.from(payload, "base64url").toString()).l,
    }),
  ).toString("base64url");
  const cases = {
    "another key": createPageTokens(randomBytes(32), field).issue({ n: "Kettle", i: "42" }, ""),
    "another listing method": createPageTokens(key, ListOrdersRequestSchema.field.pageToken).issue(
      { n: "Kettle", i: "42" },
      "",
    ),
    "a cursor of the client's own": `${forgedPayload}.${mac}`,
    "a flipped mac bit": `${payload}.${mac.slice(0, -2)}${mac.at(-2) === "A" ? "B" : "A"}${mac.at(-1)}`,
    "a trailing character": `${token}A`,
    "no mac": payload,
    "the old unsigned format": Buffer.from('{"n":"x","i":"1","c":"","q":""}').toString("base64url"),
    "not base64": "%%%.%%%",
    "a missing cursor key": tokens.issue({ n: "Kettle" }, ""),
  };
  for (const [name, bad] of Object.entries(cases)) {
    assert.deepEqual(
      violation(() => tokens.open(bad, "", ["n", "i"])),
      { path: "page_token", rule: "page_token.issued" },
      name,
    );
  }
});

test("PAGE_TOKEN_KEY: at least 32 bytes of base64, never echoed; unset means a per-process key, said once", async () => {
  const base = { SERVICE_NAME: "catalog", GRPC_PORT: "0", HTTP_PORT: "0", ADMIN_PORT: "0" };
  for (const bad of ["c2hvcnQ=", "not base64 at all!", "s3cr3t".repeat(4)]) {
    assert.throws(
      () => loadConfig(kitConfigSchema, { ...base, PAGE_TOKEN_KEY: bad }),
      (err: unknown) =>
        err instanceof ConfigError &&
        /PAGE_TOKEN_KEY:/.test(err.message) &&
        !err.message.includes(bad),
    );
  }
  const key = randomBytes(32);
  const set = loadConfig(kitConfigSchema, { ...base, PAGE_TOKEN_KEY: key.toString("base64url") });
  assert.deepEqual(set.PAGE_TOKEN_KEY, key);
  const logs = createLogSink();
  const withKey = await createRuntime(set, { logDestination: logs.stream });
  assert.deepEqual(withKey.pageTokenKey(), key);
  const unset = await createRuntime(loadConfig(kitConfigSchema, base), {
    logDestination: logs.stream,
  });
  const made = unset.pageTokenKey();
  assert.equal(made.length, 32);
  assert.equal(unset.pageTokenKey(), made, "one key per process");
  const warnings = logs.lines().filter((l) => String(l.msg).includes("PAGE_TOKEN_KEY"));
  assert.equal(warnings.length, 1);
  for (const k of [key, made]) {
    assert.ok(
      !logs.text().includes(k.toString("base64")) && !logs.text().includes(k.toString("hex")),
    );
  }
});
