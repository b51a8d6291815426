/**
 * A public method (no token needed) answers a request carrying a bad token as it answers an
 * anonymous one; every other method still refuses a bad token with UNAUTHENTICATED.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { Code, createClient, type ServiceImpl } from "@connectrpc/connect";
import { callerKey } from "../src/context.js";
import { PUBLIC_METHODS } from "../src/interceptors/auth.js";
import { createTestIssuer } from "../src/testing/auth.js";
import { EchoService } from "../src/testing/echo.js";
import { createTestTransport } from "../src/testing/interceptors.js";
import { rejection } from "../src/testing/rpc-assertions.js";

// Echo says who called it; EchoStream stands for a method that needs a caller.
const whoAmI: ServiceImpl<typeof EchoService> = {
  async echo(_req, ctx) {
    return { message: ctx.values.get(callerKey)?.userId ?? "anonymous" };
  },
  async *echoStream(req) {
    yield { message: req.message, index: 0 };
  },
};
const PUBLIC = new Set(["meshmart.echo.v1.EchoService.Echo"]);

test("a bad token on a public method is treated as anonymous; elsewhere it is UNAUTHENTICATED", async () => {
  const issuer = await createTestIssuer();
  const other = await createTestIssuer(); // signs tokens this service does not trust
  const expired = await issuer.token({ sub: "u-1", expiresIn: "-1m" });
  const forged = await other.token({ sub: "u-1" });
  const bad = ["Bearer not.a.jwt", `Bearer ${expired}`, `Bearer ${forged}`, "Basic dXNlcjpwdw=="];
  const routes = (router: Parameters<Parameters<typeof createTestTransport>[0]>[0]) =>
    router.service(EchoService, whoAmI);
  const withKeys = createClient(
    EchoService,
    createTestTransport(routes, { verifier: issuer.verifier, publicMethods: PUBLIC }).transport,
  );
  // A service without a JWKS cannot verify anything: still anonymous on a public method.
  const withoutKeys = createClient(
    EchoService,
    createTestTransport(routes, { publicMethods: PUBLIC }).transport,
  );
  for (const client of [withKeys, withoutKeys]) {
    for (const authorization of bad) {
      const res = await client.echo({ message: "x" }, { headers: { authorization } });
      assert.equal(res.message, "anonymous", authorization);
      const err = await rejection(
        (async () => {
          for await (const _ of client.echoStream(
            { message: "x", repeat: 1 },
            { headers: { authorization } },
          ));
        })(),
      );
      assert.equal(err.code, Code.Unauthenticated, authorization);
    }
  }
  // A good token on a public method still names the caller.
  const good = await issuer.token({ sub: "u-2" });
  const res = await withKeys.echo(
    { message: "x" },
    { headers: { authorization: `Bearer ${good}` } },
  );
  assert.equal(res.message, "u-2");
});

test("the kit's public methods are exactly the edge's and the OpenAPI document's", async () => {
  const { PUBLIC_METHODS: edge } = await import("../../../edge/envoy/generate.js");
  assert.deepEqual([...PUBLIC_METHODS].sort(), [...edge].sort());
  const openapi = readFileSync(new URL("../../../buf.gen.openapi.yaml", import.meta.url), "utf8");
  const documented = [...openapi.matchAll(/^\s*-\s*public=(\S+)\s*$/gm)].map((m) => m[1]);
  assert.deepEqual([...PUBLIC_METHODS].sort(), documented.sort());
});
