import {
  create,
  type DescField,
  type DescMessage,
  type DescMethod,
  type DescService,
  ScalarType,
} from "@bufbuild/protobuf";
import { Code, type ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { CatalogService } from "../../gen/meshmart/catalog/v1/catalog_service_pb.js";
import { EchoService } from "../../gen/meshmart/echo/v1/echo_service_pb.js";
import { IdentityService } from "../../gen/meshmart/identity/v1/identity_service_pb.js";
import { InventoryService } from "../../gen/meshmart/inventory/v1/inventory_service_pb.js";
import { NotificationService } from "../../gen/meshmart/notifications/v1/notifications_service_pb.js";
import { OrderService } from "../../gen/meshmart/orders/v1/orders_service_pb.js";
import { PaymentService } from "../../gen/meshmart/payments/v1/payments_service_pb.js";
import type { Routes } from "../../src/server/service-host.js";

/** Every service of the mesh (and the kit's echo), as the kit serves them. */
export const EVERY_SERVICE: readonly DescService[] = [
  IdentityService,
  CatalogService,
  InventoryService,
  PaymentService,
  OrderService,
  NotificationService,
  EchoService,
];

/** Every method of {@link EVERY_SERVICE}. */
export const EVERY_METHOD: readonly DescMethod[] = EVERY_SERVICE.flatMap((s) => s.methods);

/**
 * Routes serving every service with stand-in handlers that only record that they ran: what
 * the kit does before a handler (decoding, the interceptor chain) is what these tests test.
 * A stand-in answers the method's empty response, or fails with what `failWith` returns.
 */
export function stubRoutes(
  reached: DescMethod[],
  failWith: () => ConnectError | undefined = () => undefined,
): Routes {
  return (router) => {
    for (const service of EVERY_SERVICE) {
      const impl: Record<string, unknown> = {};
      for (const method of service.methods) {
        const answer = () => {
          reached.push(method);
          const failure = failWith();
          if (failure !== undefined) throw failure;
          return create(method.output);
        };
        impl[method.localName] =
          method.methodKind === "server_streaming"
            ? async function* () {
                yield answer();
              }
            : async () => answer();
      }
      router.service(service, impl as ServiceImpl<DescService>);
    }
  };
}

/** A field path from the request message to one string, with how to reach it. */
export interface StringLeaf {
  /** e.g. `items[0].product_id`, `metadata["k"]` (a map key: `labels{key}`). */
  path: string;
  /** The path as a violation names it: field names only, dots between. */
  fieldNames: string;
  /** A request whose only non-default value is `value` at this path. */
  build(value: string): unknown;
}

/**
 * Every string a request of `message` can carry, up to `depth` messages deep (a repeated or
 * map field contributes its first element): each is where a NUL could reach the database.
 */
export function stringLeaves(message: DescMessage, depth = 4): StringLeaf[] {
  const out: StringLeaf[] = [];
  for (const field of message.fields) {
    for (const leaf of fieldLeaves(field, depth)) {
      out.push({
        path: `${field.name}${leaf.path}`,
        fieldNames: [field.name, ...leaf.names].join("."),
        build: (value) => create(message, initFor(field, leaf.build(value)) as never),
      });
    }
  }
  return out;
}

interface PartialLeaf {
  path: string;
  names: string[];
  build(value: string): unknown;
}

/** Leaves under one field; `build` returns the field's value. */
function fieldLeaves(field: DescField, depth: number): PartialLeaf[] {
  const nested = (m: DescMessage): PartialLeaf[] =>
    depth <= 1
      ? []
      : stringLeaves(m, depth - 1).map((l) => ({
          path: `.${l.path}`,
          names: l.fieldNames.split("."),
          build: (v) => l.build(v),
        }));
  switch (field.fieldKind) {
    case "scalar":
      return field.scalar === ScalarType.STRING ? [{ path: "", names: [], build: (v) => v }] : [];
    case "message":
      return nested(field.message);
    case "list":
      if (field.listKind === "scalar") {
        return field.scalar === ScalarType.STRING
          ? [{ path: "[0]", names: [], build: (v) => [v] }]
          : [];
      }
      if (field.listKind === "message") {
        return nested(field.message).map((l) => ({
          ...l,
          path: `[0]${l.path}`,
          build: (v) => [l.build(v)],
        }));
      }
      return [];
    case "map": {
      const out: PartialLeaf[] = [];
      if (field.mapKey === ScalarType.STRING) {
        const zero = field.mapKind === "scalar" ? scalarZero(field.scalar) : {};
        out.push({ path: "{key}", names: [], build: (v) => ({ [v]: zero }) });
      }
      if (field.mapKind === "scalar" && field.scalar === ScalarType.STRING) {
        out.push({ path: '["k"]', names: [], build: (v) => ({ k: v }) });
      } else if (field.mapKind === "message") {
        for (const l of nested(field.message)) {
          out.push({ ...l, path: `["k"]${l.path}`, build: (v) => ({ k: l.build(v) }) });
        }
      }
      return out;
    }
    case "enum":
      return [];
  }
}

function scalarZero(t: ScalarType): unknown {
  if (t === ScalarType.STRING) return "";
  if (t === ScalarType.BOOL) return false;
  if (t === ScalarType.BYTES) return new Uint8Array();
  if (t === ScalarType.INT64 || t === ScalarType.UINT64) return 0n;
  if (t === ScalarType.SINT64 || t === ScalarType.FIXED64 || t === ScalarType.SFIXED64) return 0n;
  return 0;
}

/** The init object of a message that sets `field` to `value` (inside its oneof if it has one). */
function initFor(field: DescField, value: unknown): Record<string, unknown> {
  if (field.oneof !== undefined) {
    return { [field.oneof.localName]: { case: field.localName, value } };
  }
  return { [field.localName]: value };
}

/** The message's ConnectError code name as the Connect protocol spells it. */
export function codeName(code: Code): string {
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
}

export { CatalogService, EchoService, IdentityService, OrderService };
