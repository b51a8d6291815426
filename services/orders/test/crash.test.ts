import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { once } from "node:events";
import { type AddressInfo, createServer, type Socket } from "node:net";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { Sql } from "@meshmart/kit";
import { OrderStatus } from "@meshmart/kit/gen/meshmart/orders/v1/orders_pb.js";
import { OrderService } from "@meshmart/kit/gen/meshmart/orders/v1/orders_service_pb.js";
import { createTestDatabase, freePort, type TestDatabase } from "@meshmart/kit/testing";
import { listeningPorts } from "../../../scripts/lib/services.js";
import {
  card,
  eventually,
  type Mesh,
  newCardKey,
  newCustomer,
  ordersEnv,
  ordersSql,
  STEP_TIMEOUT_MS,
  startMesh,
  startTestOrders,
  waitForTerminal,
} from "./support/mesh.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

interface SagaState {
  step: string;
  attempts: number;
  claim_token: string | null;
  stock_state: string;
  card_sealed: Buffer | null;
}

/** Orders' main in a child process (as the image runs it), so a test can SIGKILL it. */
async function spawnOrders(env: Record<string, string>) {
  const child: ChildProcess = spawn(
    process.execPath,
    ["--conditions=development", "--import", "tsx", "services/orders/src/main.ts"],
    { cwd: ROOT, env: { PATH: process.env.PATH ?? "", ...env }, stdio: ["ignore", "pipe", "pipe"] },
  );
  let out = "";
  child.stdout?.on("data", (c: Buffer) => {
    out += c.toString();
  });
  child.stderr?.on("data", (c: Buffer) => {
    out += c.toString();
  });
  const ports = await eventually(
    "orders to listen",
    async () => {
      assert.equal(child.exitCode, null, `orders exited:\n${out}`);
      return out
        .split("\n")
        .map(listeningPorts)
        .find((p) => p !== undefined);
    },
    60_000,
  );
  const client: Client<typeof OrderService> = createClient(
    OrderService,
    createGrpcTransport({ baseUrl: `http://127.0.0.1:${ports.grpc}` }),
  );
  return {
    client,
    output: () => out,
    async kill() {
      const exited = once(child, "exit");
      child.kill("SIGKILL");
      await exited;
    },
  };
}

// A saga outlives the orders process that started it: whatever replica comes next resumes
// it from the recorded step, and the order ends as if nothing had happened.
describe("saga crash recovery", () => {
  let mesh: Mesh;
  let db: TestDatabase;
  let sql: Sql;
  const cardKey = newCardKey();

  before(async () => {
    mesh = await startMesh("orders_crash");
    db = await createTestDatabase("orders_crash");
    sql = ordersSql(db.url);
  });
  after(async () => {
    await sql?.end({ timeout: 1 });
    await db?.drop();
    await mesh?.close();
  });

  const sagaOf = async (orderId: string) => {
    const [saga] = await sql<SagaState[]>`
      select step, attempts, claim_token, stock_state, card_sealed
      from order_sagas where order_id = ${orderId}`;
    return saga;
  };
  const paymentsOf = (orderId: string) =>
    mesh.paymentsSql<{ status: string; captured_minor: bigint }[]>`
      select status, captured_minor from payments where order_id = ${orderId}`;

  test("inventory unreachable, orders stops, a new orders finishes the order", async () => {
    const clock = await mesh.product({ units: 30n, stock: 6n });
    const customer = await newCustomer(mesh);
    const deadInventory = `http://127.0.0.1:${await freePort()}`;
    const first = await startTestOrders(mesh, db.url, cardKey, { INVENTORY_URL: deadInventory });
    let orderId: string;
    try {
      const { order } = await first.client.placeOrder(
        {
          requestId: randomUUID(),
          items: [{ productId: clock.id, quantity: 2 }],
          payment: { card: card() },
        },
        customer.options,
      );
      assert.ok(order);
      orderId = order.id;
      await eventually("the reservation to be retried", async () => {
        const saga = await sagaOf(order.id);
        return saga?.step === "RESERVE" && saga.attempts >= 3 ? true : undefined;
      });
    } finally {
      await first.close();
    }
    assert.equal((await sagaOf(orderId))?.step, "RESERVE");
    assert.equal((await mesh.stockOf(clock.id)).reserved, 0n);

    const second = await startTestOrders(mesh, db.url, cardKey);
    try {
      const done = await waitForTerminal(second.client, orderId, customer.options);
      assert.equal(done.status, OrderStatus.CONFIRMED);
      const stock = await mesh.stockOf(clock.id);
      assert.deepEqual([stock.onHand, stock.reserved], [4n, 0n]);
      assert.deepEqual(
        (await paymentsOf(orderId)).map((p) => [p.status, p.captured_minor]),
        [["captured", 6000n]],
      );
    } finally {
      await second.close();
    }
  });

  test("inventory that never answers: PlaceOrder answers PENDING before the caller's deadline", async () => {
    const lamp = await mesh.product({ units: 12n, stock: 3n });
    const customer = await newCustomer(mesh);
    // Accepts connections and never answers: the reservation waits for its step timeout
    // (STEP_TIMEOUT_MS), longer than the caller is prepared to wait for PlaceOrder.
    const connections = new Set<Socket>();
    const silent = createServer((socket) => connections.add(socket));
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const { port } = silent.address() as AddressInfo;
    const orders = await startTestOrders(mesh, db.url, cardKey, {
      INVENTORY_URL: `http://127.0.0.1:${port}`,
    });
    try {
      const started = performance.now();
      const { order } = await orders.client.placeOrder(
        {
          requestId: randomUUID(),
          items: [{ productId: lamp.id, quantity: 1 }],
          payment: { card: card() },
        },
        { ...customer.options, timeoutMs: STEP_TIMEOUT_MS / 2 },
      );
      const ms = performance.now() - started;
      assert.equal(order?.status, OrderStatus.PENDING);
      assert.ok(ms < STEP_TIMEOUT_MS / 2, `answered after ${ms.toFixed(0)} ms`);
      assert.equal((await sagaOf(order.id))?.step, "RESERVE", "the reservation goes on");
    } finally {
      await orders.close();
      for (const socket of connections) socket.destroy();
      silent.close();
    }
  });

  /**
   * Places an order through an in-process orders (the test's tokens are verified there),
   * waits until `ready` holds for its saga, and stops that orders: the saga is left to
   * whichever replica comes next.
   */
  async function placeAndLeave(
    productId: string,
    quantity: number,
    ready: (saga: SagaState) => boolean,
  ) {
    const customer = await newCustomer(mesh);
    const first = await startTestOrders(mesh, db.url, cardKey);
    try {
      const { order } = await first.client.placeOrder(
        { requestId: randomUUID(), items: [{ productId, quantity }], payment: { card: card() } },
        customer.options,
      );
      assert.ok(order);
      const orderId = order.id;
      await eventually("the saga to get going", async () => {
        const saga = await sagaOf(orderId);
        return saga !== undefined && ready(saga) ? true : undefined;
      });
      return { orderId, customer };
    } finally {
      await first.close();
    }
  }

  test("orders is killed while the authorization is retried; the sealed card survives", async () => {
    const lamp = await mesh.product({ units: 25n, stock: 3n });
    mesh.processor.setDown(true);
    try {
      const { orderId, customer } = await placeAndLeave(
        lamp.id,
        1,
        (s) => s.step === "AUTHORIZE" && s.attempts >= 2,
      );
      const handedOver = (await sagaOf(orderId))?.attempts ?? 0;
      // A replica in its own process picks the saga up, retries, and is killed.
      const crashing = await spawnOrders(ordersEnv(mesh, db.url, cardKey, { LOG_LEVEL: "info" }));
      try {
        await eventually("the other process to retry the authorization", async () => {
          const saga = await sagaOf(orderId);
          return saga !== undefined && saga.attempts >= handedOver + 2 ? true : undefined;
        });
      } finally {
        await crashing.kill();
      }
      const stranded = await sagaOf(orderId);
      assert.equal(stranded?.step, "AUTHORIZE");
      assert.equal(stranded?.stock_state, "RESERVED");
      // Sealed, not stored in the clear.
      assert.ok(stranded?.card_sealed);
      assert.ok(!stranded.card_sealed.toString("latin1").includes(card().number));
      assert.doesNotMatch(crashing.output(), new RegExp(card().number));

      mesh.processor.setDown(false);
      const next = await startTestOrders(mesh, db.url, cardKey);
      try {
        const done = await waitForTerminal(next.client, orderId, customer.options);
        assert.equal(done.status, OrderStatus.CONFIRMED);
        assert.equal(done.cardLast4, "4242");
        assert.equal((await sagaOf(orderId))?.card_sealed, null);
        assert.deepEqual(
          (await paymentsOf(orderId)).map((p) => [p.status, p.captured_minor]),
          [["captured", 2500n]],
        );
        const stock = await mesh.stockOf(lamp.id);
        assert.deepEqual([stock.onHand, stock.reserved], [2n, 0n]);
      } finally {
        await next.close();
      }
    } finally {
      mesh.processor.setDown(false);
    }
  });

  test("orders is killed mid-authorization; the next replica takes over after the lease", async () => {
    const rug = await mesh.product({ units: 80n, stock: 2n });
    mesh.processor.hold();
    let released = false;
    try {
      // The first replica's authorization times out at the held processor as it stops.
      const { orderId, customer } = await placeAndLeave(
        rug.id,
        2,
        (s) => s.step === "AUTHORIZE" && s.claim_token !== null,
      );
      const handedOver = (await sagaOf(orderId))?.attempts ?? 0;
      const crashing = await spawnOrders(ordersEnv(mesh, db.url, cardKey, { LOG_LEVEL: "info" }));
      try {
        await eventually("the other process's authorization to be in flight", async () => {
          const saga = await sagaOf(orderId);
          return saga?.step === "AUTHORIZE" &&
            saga.claim_token !== null &&
            saga.attempts > handedOver
            ? true
            : undefined;
        });
      } finally {
        await crashing.kill();
      }
      mesh.processor.release();
      released = true;
      const next = await startTestOrders(mesh, db.url, cardKey);
      try {
        const done = await waitForTerminal(next.client, orderId, customer.options);
        assert.equal(done.status, OrderStatus.CONFIRMED);
        // One authorization survived, captured once, whatever the dead replica's call did.
        const payments = await paymentsOf(orderId);
        assert.deepEqual(
          payments.filter((p) => p.status !== "voided").map((p) => [p.status, p.captured_minor]),
          [["captured", 16000n]],
        );
        const stock = await mesh.stockOf(rug.id);
        assert.deepEqual([stock.onHand, stock.reserved], [0n, 0n]);
      } finally {
        await next.close();
      }
    } finally {
      if (!released) mesh.processor.release();
    }
  });
});
