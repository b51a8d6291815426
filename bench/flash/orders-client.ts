/**
 * The flash benchmark's OrderService client: @grpc/grpc-js with protobuf-es codecs, one
 * channel (one HTTP/2 connection) per customer. The runner shares the machine's cores with
 * the services it measures, and grpc-js costs a fraction of connect-node's CPU per call
 * (bench/README.md), so the load generator takes less from what is measured.
 */
import {
  create,
  type DescMessage,
  fromBinary,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  type PlaceOrderRequest,
  PlaceOrderRequestSchema,
  type PlaceOrderResponse,
  PlaceOrderResponseSchema,
  WatchOrderRequestSchema,
  type WatchOrderResponse,
  WatchOrderResponseSchema,
} from "@meshmart/kit/gen/meshmart/orders/v1/orders_service_pb.js";

const SERVICE = "/meshmart.orders.v1.OrderService";

/** A failed call: its gRPC status name (e.g. DEADLINE_EXCEEDED) and message. */
export class CallError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** One customer's connection to orders, calling with its access token. */
export interface OrdersClient {
  placeOrder(
    request: Parameters<typeof create<typeof PlaceOrderRequestSchema>>[1],
    timeoutMs: number,
  ): Promise<PlaceOrderResponse>;
  /** The order's states as WatchOrder streams them, until the stream ends. */
  watchOrder(orderId: string, timeoutMs: number): AsyncIterable<WatchOrderResponse>;
  /** Opens the connection (a WatchOrder of an unknown order answers NOT_FOUND). */
  connect(): Promise<void>;
  close(): void;
}

const serialize =
  <D extends DescMessage>(schema: D) =>
  (message: MessageShape<D>): Buffer =>
    Buffer.from(toBinary(schema, message));
const deserialize =
  <D extends DescMessage>(schema: D) =>
  (bytes: Buffer): MessageShape<D> =>
    fromBinary(schema, bytes);

/** A client for orders at `target` (host:port) calling as the holder of `token`. */
export function createOrdersClient(target: string, token: string): OrdersClient {
  // Each customer its own connection, as separate clients would have.
  const client = new grpc.Client(target, grpc.credentials.createInsecure(), {
    "grpc.use_local_subchannel_pool": 1,
  });
  const metadata = () => {
    const m = new grpc.Metadata();
    m.set("authorization", `Bearer ${token}`);
    return m;
  };
  const failed = (err: grpc.ServiceError) =>
    new CallError(grpc.status[err.code] ?? String(err.code), err.details || err.message);

  return {
    placeOrder(request, timeoutMs) {
      return new Promise((resolve, reject) => {
        client.makeUnaryRequest<PlaceOrderRequest, PlaceOrderResponse>(
          `${SERVICE}/PlaceOrder`,
          serialize(PlaceOrderRequestSchema),
          deserialize(PlaceOrderResponseSchema),
          create(PlaceOrderRequestSchema, request),
          metadata(),
          { deadline: Date.now() + timeoutMs },
          (err, res) => {
            if (err !== null) reject(failed(err));
            else if (res === undefined) reject(new CallError("UNKNOWN", "no response"));
            else resolve(res);
          },
        );
      });
    },

    async *watchOrder(orderId, timeoutMs) {
      const stream = client.makeServerStreamRequest(
        `${SERVICE}/WatchOrder`,
        serialize(WatchOrderRequestSchema),
        deserialize(WatchOrderResponseSchema),
        create(WatchOrderRequestSchema, { orderId }),
        metadata(),
        { deadline: Date.now() + timeoutMs },
      );
      try {
        for await (const message of stream) yield message as WatchOrderResponse;
      } catch (reason) {
        if (reason instanceof Error && "code" in reason) {
          throw failed(reason as grpc.ServiceError);
        }
        throw reason;
      } finally {
        // A watcher that stops reading early ends the stream for the server too.
        stream.cancel();
      }
    },

    async connect() {
      try {
        for await (const _ of this.watchOrder("00000000-0000-4000-8000-000000000000", 5_000)) {
          // Nothing: the order does not exist.
        }
      } catch (reason) {
        if (!(reason instanceof CallError) || reason.code !== "NOT_FOUND") throw reason;
      }
    },

    close() {
      client.close();
    },
  };
}
