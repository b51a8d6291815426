import assert from "node:assert/strict";
import { test } from "node:test";
import { ConfigError, kitConfigSchema, loadConfig } from "../src/config.js";

const valid = { SERVICE_NAME: "catalog", GRPC_PORT: "9102", HTTP_PORT: "9202", ADMIN_PORT: "9302" };

test("parses a minimal environment and applies defaults", () => {
  const config = loadConfig(kitConfigSchema, valid);
  assert.equal(config.GRPC_PORT, 9102);
  assert.equal(config.MAX_DEADLINE_MS, 30_000);
  assert.equal(config.BIND_HOST, "127.0.0.1");
  assert.equal(config.AUTH_JWKS_URL, undefined);
});

test("lists every bad variable at once, without echoing values", () => {
  assert.throws(
    () =>
      loadConfig(kitConfigSchema, {
        ...valid,
        GRPC_PORT: "hunter2-not-a-port",
        LOG_LEVEL: "chatty",
        AUTH_JWKS_URL: "not a url",
        ADMIN_PORT: undefined,
      }),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      for (const name of ["GRPC_PORT", "LOG_LEVEL", "AUTH_JWKS_URL", "ADMIN_PORT"]) {
        assert.match(err.message, new RegExp(`${name}:`));
      }
      assert.doesNotMatch(err.message, /hunter2/);
      return true;
    },
  );
});

test("treats empty variables as unset", () => {
  const config = loadConfig(kitConfigSchema, { ...valid, LOG_LEVEL: "", AUTH_JWKS_URL: "" });
  assert.equal(config.LOG_LEVEL, "info");
  assert.equal(config.AUTH_JWKS_URL, undefined);
});
