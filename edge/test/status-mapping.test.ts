/**
 * How a service's gRPC status reaches a REST caller through Envoy's transcoder
 * (convert_grpc_status): the HTTP status for every code, and the google.rpc.Status body with
 * the service's message. A stand-in catalog answers GetProduct with the code its id names.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { CatalogService } from "@meshmart/kit/gen/meshmart/catalog/v1/catalog_service_pb.js";
import { startTestHost, type TestHost } from "@meshmart/kit/testing";
import { startTestEdge, type TestEdge } from "../../tests/support/envoy-edge.js";
import { call, portsOf } from "./support/http.js";

/** The product id whose GetProduct fails with `code` (a valid uuid, as the method requires). */
const idFor = (code: Code) => `00000000-0000-4000-8000-${String(code).padStart(12, "0")}`;

/**
 * gRPC code → HTTP status, as Envoy maps them (Grpc::Utility::grpcToHttpStatus). Unknown
 * (→ 500) is absent: the kit reports a handler's Unknown as Internal before Envoy sees it.
 */
const HTTP_STATUS: Readonly<Record<number, number>> = {
  [Code.Canceled]: 499,
  [Code.InvalidArgument]: 400,
  [Code.DeadlineExceeded]: 504,
  [Code.NotFound]: 404,
  [Code.AlreadyExists]: 409,
  [Code.PermissionDenied]: 403,
  [Code.ResourceExhausted]: 429,
  [Code.FailedPrecondition]: 400,
  [Code.Aborted]: 409,
  [Code.OutOfRange]: 400,
  [Code.Unimplemented]: 501,
  [Code.Internal]: 500,
  [Code.Unavailable]: 503,
  [Code.DataLoss]: 500,
  [Code.Unauthenticated]: 401,
};

let catalog: TestHost;
let edge: TestEdge;

before(async () => {
  catalog = await startTestHost({
    routes: (router) => {
      router.service(CatalogService, {
        getProduct(req) {
          const code = Number(req.productId.slice(-12)) as Code;
          throw new ConnectError(`the stand-in says ${Code[code]}`, code);
        },
      });
    },
  });
  edge = await startTestEdge({ services: new Map([["catalog", portsOf(catalog)]]) });
});

after(async () => {
  await edge?.close();
  await catalog?.close();
});

for (const [code, status] of Object.entries(HTTP_STATUS)) {
  const name = Code[Number(code)];
  test(`${name} (${code}) → HTTP ${status}, google.rpc.Status with the service's message`, async () => {
    const res = await call(edge.url, "GET", `/v1/products/${idFor(Number(code))}`);
    assert.equal(res.status, status, res.text);
    assert.equal(res.headers.get("content-type"), "application/json");
    assert.equal(res.json.code, Number(code), res.text);
    assert.equal(res.json.message, `the stand-in says ${name}`);
  });
}
