/**
 * Envoy's local rate limits, per client: a signed-in caller's bucket is keyed by the verified
 * `sub`, anyone else's by the connection's address; each route has its own buckets, and the
 * credential methods stricter ones. Clients here come from distinct loopback addresses
 * (127.0.0.x), so each test starts with full buckets. No service listens behind the edge: an
 * admitted call answers 503, a refused one 429, which is all these tests need to tell apart.
 *
 * There is no shared (Redis) limit any more: Envoy's local rate limit is per replica.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { startTestEdge, type TestEdge } from "../../tests/support/envoy-edge.js";
import { RATE_LIMITS } from "../envoy/generate.js";
import { NO_PORT, type SendAnswer, send } from "./support/http.js";
import { type JwksIssuer, startJwksIssuer } from "./support/jwks-issuer.js";

const LOGIN = RATE_LIMITS.methods["meshmart.identity.v1.IdentityService.Login"] ?? assert.fail();
const DEFAULT = RATE_LIMITS.default;

describe("rate limits through Envoy", { timeout: 60_000 }, () => {
  let issuer: JwksIssuer;
  let edge: TestEdge;
  let nextClient = 2;

  before(async () => {
    issuer = await startJwksIssuer();
    edge = await startTestEdge({
      services: new Map([["identity", { grpc: NO_PORT, http: issuer.port }]]),
    });
  });

  after(async () => {
    await edge?.close();
    await issuer?.close();
  });

  /** A client of its own: requests from a loopback address no other test uses. */
  function newClient() {
    const localAddress = `127.0.0.${nextClient++}`;
    return (method: string, path: string, headers: Record<string, string> = {}, body?: string) =>
      send(edge.port, {
        method,
        path,
        localAddress,
        headers: body === undefined ? headers : { "content-type": "application/json", ...headers },
        ...(body === undefined ? {} : { body }),
      });
  }

  /** `n` calls at once; how many were admitted (503: no upstream) and how many refused. */
  async function burst(n: number, call: () => Promise<SendAnswer>) {
    const answers = await Promise.all(Array.from({ length: n }, call));
    const other = answers.filter((a) => a.status !== 503 && a.status !== 429);
    assert.deepEqual(
      other.map((a) => a.status),
      [],
      "only 503 (admitted) or 429 (refused)",
    );
    return {
      admitted: answers.filter((a) => a.status === 503).length,
      refused: answers.filter((a) => a.status === 429),
    };
  }

  test("over the burst → 429 RESOURCE_EXHAUSTED JSON with retry-after; refills", async () => {
    const client = newClient();
    // The bucket refills by perSecond once a second: a burst inside one second gets at most
    // one refill on top of the burst.
    const { admitted, refused } = await burst(DEFAULT.burst + 2 * DEFAULT.perSecond, () =>
      client("GET", "/v1/categories"),
    );
    assert.ok(admitted >= DEFAULT.burst, `admitted ${admitted}`);
    assert.ok(admitted <= DEFAULT.burst + DEFAULT.perSecond, `admitted ${admitted}`);
    const [one] = refused;
    assert.ok(one);
    assert.equal(one.headers["retry-after"], "1");
    assert.equal(one.headers["content-type"], "application/json");
    assert.deepEqual(JSON.parse(one.body), { code: 8, message: "local_rate_limited" });
    await sleep(1_100);
    assert.equal((await client("GET", "/v1/categories")).status, 503, "admitted after a refill");
  });

  test("another client has its own bucket", async () => {
    const first = newClient();
    const { refused } = await burst(DEFAULT.burst + 2 * DEFAULT.perSecond, () =>
      first("GET", "/v1/products"),
    );
    assert.ok(refused.length > 0);
    assert.equal((await newClient()("GET", "/v1/products")).status, 503);
  });

  test("Login has its own, stricter bucket; other routes are unaffected", async () => {
    const client = newClient();
    const login = () => client("POST", "/v1/sessions", {}, "{}");
    const { admitted, refused } = await burst(LOGIN.burst + LOGIN.perSecond + 5, login);
    assert.ok(admitted >= LOGIN.burst && admitted <= LOGIN.burst + LOGIN.perSecond, `${admitted}`);
    assert.equal(refused[0]?.headers["retry-after"], "1");
    assert.equal((await client("POST", "/v1/users", {}, "{}")).status, 503, "SignUp: own bucket");
    assert.equal((await client("GET", "/v1/categories")).status, 503, "browsing: own bucket");
  });

  test("signed-in callers are limited per user, separately from their address", async () => {
    const client = newClient();
    const [a, b] = await Promise.all([issuer.token({}), issuer.token({})]);
    const as = (token: string) => () =>
      client("GET", "/v1/orders", { authorization: `Bearer ${token}` });
    const userA = await burst(DEFAULT.burst + 2 * DEFAULT.perSecond, as(a));
    assert.ok(userA.refused.length > 0, "user A runs out");
    assert.equal((await as(b)()).status, 503, "user B, same address, still has tokens");
    // On a public method too: a valid token is verified there, for its bucket.
    const browse = (token: string) => () =>
      client("GET", "/v1/categories", { authorization: `Bearer ${token}` });
    const browsingA = await burst(DEFAULT.burst + 2 * DEFAULT.perSecond, browse(a));
    assert.ok(browsingA.refused.length > 0);
    assert.equal((await browse(b)()).status, 503, "user B browses on");
    assert.equal((await client("GET", "/v1/categories")).status, 503, "so does the address");
  });

  test("a bad token on a public method counts against the address", async () => {
    const client = newClient();
    // Half with a forged token, half with none, at once: one bucket between them, or the
    // forged half could be tried for free.
    let n = 0;
    const { admitted, refused } = await burst(2 * DEFAULT.burst, () =>
      n++ % 2 === 0
        ? client("GET", "/v1/categories", { authorization: "Bearer forged" })
        : client("GET", "/v1/categories"),
    );
    assert.ok(admitted <= DEFAULT.burst + DEFAULT.perSecond, `admitted ${admitted}`);
    assert.ok(refused.length > 0);
  });
});
