import { randomBytes, randomUUID } from "node:crypto";
import { fromBinary } from "@bufbuild/protobuf";
import { type CallOptions, type Client, createClient } from "@connectrpc/connect";
import { createEventNames, type EventNames, type Sql } from "@meshmart/kit";
import {
  StockCommittedSchema,
  StockLevelChangedSchema,
  StockReleasedSchema,
  StockReservedSchema,
} from "@meshmart/kit/gen/meshmart/inventory/v1/events_pb.js";
import { InventoryService } from "@meshmart/kit/gen/meshmart/inventory/v1/inventory_service_pb.js";
import {
  bearer,
  createTestIssuer,
  createTestTransport,
  type LogSink,
  openServiceTestDatabase,
  type TestDatabase,
} from "@meshmart/kit/testing";
import { createInventoryRoutes } from "../../src/routes.js";
import { createInventoryStore, type InventoryStore, type StockRow } from "../../src/store.js";

/** Inventory's migrations folder. */
export const migrationsDir = new URL("../../migrations/", import.meta.url);

/** The event messages inventory publishes, by fully-qualified type name. */
export const eventSchemas = {
  "meshmart.inventory.v1.StockReserved": StockReservedSchema,
  "meshmart.inventory.v1.StockReleased": StockReleasedSchema,
  "meshmart.inventory.v1.StockCommitted": StockCommittedSchema,
  "meshmart.inventory.v1.StockLevelChanged": StockLevelChangedSchema,
} as const;

/** An outbox row, as the relay will read it. */
export interface OutboxRow {
  seq: bigint;
  event_id: string;
  subject: string;
  event_type: string;
  payload: Buffer;
}

/**
 * Inventory's handlers wired as `startInventory` wires them (store, routes), served in
 * memory through the production interceptor chain over a fresh database. `close()`
 * releases the pool and drops the database.
 */
export interface InventoryFixture {
  client: Client<typeof InventoryService>;
  /** The service's own pool, for arranging and checking rows behind the API. */
  sql: Sql;
  store: InventoryStore;
  names: EventNames;
  db: TestDatabase;
  logs: LogSink;
  /** Call options with a bearer token of role admin / customer, and with a forged token. */
  admin: CallOptions;
  customer: CallOptions;
  forged: CallOptions;
  /** A product with a stock record of `onHand` units (created directly, no events). */
  product(onHand: number, sku?: string): Promise<string>;
  /** The stored stock row of a product. */
  stock(productId: string): Promise<StockRow>;
  /**
   * Holds `productId`'s stock row with FOR UPDATE in a transaction of its own (as a
   * reservation being committed does) until the returned release is called.
   */
  holdStockRow(productId: string): Promise<() => Promise<void>>;
  /** Outbox rows written after `afterSeq`, in order. */
  outboxSince(afterSeq: bigint): Promise<OutboxRow[]>;
  /** The highest outbox seq so far (0 when empty), to look at what comes after. */
  outboxMark(): Promise<bigint>;
  close(): Promise<void>;
}

/** Options of {@link createInventoryFixture}. */
export interface FixtureOptions {
  /** Pool size of the service's pool (the production default is 10). */
  poolMax?: number;
}

export async function createInventoryFixture(
  label: string,
  options: FixtureOptions = {},
): Promise<InventoryFixture> {
  const [{ db, sql, logs, close }, issuer, forgedIssuer] = await Promise.all([
    openServiceTestDatabase({
      label,
      service: "inventory",
      migrations: migrationsDir,
      ...(options.poolMax === undefined ? {} : { poolMax: options.poolMax }),
    }),
    createTestIssuer(),
    createTestIssuer(),
  ]);
  const names = createEventNames("meshmart");
  const store = createInventoryStore(sql, names);
  const { transport } = createTestTransport(createInventoryRoutes({ store }), {
    verifier: issuer.verifier,
  });
  const [admin, customer, forged] = await Promise.all([
    bearer(issuer, ["admin"]),
    bearer(issuer, ["customer"]),
    bearer(forgedIssuer, ["admin"]),
  ]);
  return {
    client: createClient(InventoryService, transport),
    sql,
    store,
    names,
    db,
    logs,
    admin,
    customer,
    forged,
    async product(onHand, sku = "") {
      const id = randomUUID();
      await sql`insert into stock_levels (product_id, sku, on_hand) values (${id}, ${sku}, ${onHand})`;
      return id;
    },
    async stock(productId) {
      const [row] = await sql<StockRow[]>`
        select product_id, sku, on_hand, reserved, updated_at from stock_levels
        where product_id = ${productId}`;
      if (row === undefined) throw new Error(`no stock row for ${productId}`);
      return row;
    },
    async holdStockRow(productId) {
      let release = () => {};
      const gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      let locked = () => {};
      const holding = new Promise<void>((resolve) => {
        locked = resolve;
      });
      const holder = sql.begin(async (tx) => {
        await tx`select 1 from stock_levels where product_id = ${productId} for update`;
        locked();
        await gate;
      });
      await Promise.race([holding, holder]);
      return async () => {
        release();
        await holder;
      };
    },
    async outboxSince(afterSeq) {
      const rows = await sql<OutboxRow[]>`
        select seq, event_id, subject, event_type, payload from event_outbox
        where seq > ${afterSeq.toString()} order by seq`;
      return [...rows];
    },
    async outboxMark() {
      const [row] = await sql<{ seq: bigint | null }[]>`select max(seq) as seq from event_outbox`;
      return row?.seq ?? 0n;
    },
    close,
  };
}

/** An outbox row's payload, decoded with its declared type. */
export function decodeEvent(row: OutboxRow) {
  const schema = eventSchemas[row.event_type as keyof typeof eventSchemas];
  if (schema === undefined) throw new Error(`unexpected event type ${row.event_type}`);
  return fromBinary(schema, row.payload);
}

/** A SKU no other test uses. */
export function uniqueSku(tag: string): string {
  return `${tag}-${randomBytes(4).toString("hex").toUpperCase()}`;
}

export { errorInfosOf } from "@meshmart/kit";
export { rejection, violationsOf } from "@meshmart/kit/testing";
