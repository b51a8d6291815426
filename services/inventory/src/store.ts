import {
  beginWithLast,
  type EventNames,
  type LastWrite,
  newEvent,
  type OutboundEvent,
  type Sql,
  writeEvents,
} from "@meshmart/kit";
import {
  StockCommittedSchema,
  StockLevelChangedSchema,
  StockReleasedSchema,
  StockReservedSchema,
} from "@meshmart/kit/gen/meshmart/inventory/v1/events_pb.js";
import type { TransactionSql } from "postgres";
import { toReservationItems, toStockLevel } from "./stock-mapper.js";

/** A product's stock as stored. Invariant (checked by the table too): 0 <= reserved <= on_hand. */
export interface StockRow {
  product_id: string;
  /** '' until a SetStock names one. */
  sku: string;
  on_hand: bigint;
  reserved: bigint;
  updated_at: Date;
}

/** A reservation's status as stored. */
export type ReservationStatusText = "reserved" | "committed" | "released";

/** Units of one product held by a reservation. */
export interface ReservationItemRow {
  product_id: string;
  quantity: number;
}

/** A reservation with its items (in product id order). */
export interface ReservationRow {
  order_id: string;
  status: ReservationStatusText;
  created_at: Date;
  updated_at: Date;
  items: ReservationItemRow[];
}

/** What SetStock asks for; `sku` '' leaves the stored SKU as it is. */
export interface StockChange {
  productId: string;
  sku: string;
  onHand: bigint;
}

/** A stock record to create if missing (seeding). */
export interface NewStock {
  productId: string;
  sku?: string;
  onHand: bigint;
}

/** Outcome of SetStock. */
export type SetStockOutcome =
  | { kind: "set"; stock: StockRow }
  | { kind: "below_reserved"; stock: StockRow }
  | { kind: "sku_conflict" };

/** Outcome of ReserveStock. */
export type ReserveOutcome =
  /** Held now, by this call. */
  | { kind: "reserved"; reservation: ReservationRow }
  /** A retry: the order already holds exactly these items (or they were committed since). */
  | { kind: "existing"; reservation: ReservationRow }
  | { kind: "released"; reservation: ReservationRow }
  | { kind: "mismatch"; reservation: ReservationRow }
  | { kind: "unknown_product"; productId: string }
  | { kind: "insufficient"; productId: string; requested: number; available: bigint };

/** Outcome of ReleaseReservation (and of the expiry sweeper, which shares it). */
export type ReleaseOutcome =
  /** `unitsReleased`: this call returned units to available (and published StockReleased). */
  | { kind: "released"; reservation: ReservationRow; unitsReleased: boolean }
  | { kind: "committed"; reservation: ReservationRow };

/** Outcome of CommitReservation. */
export type CommitOutcome =
  | { kind: "committed"; reservation: ReservationRow }
  | { kind: "released"; reservation: ReservationRow }
  | { kind: "not_found" };

/**
 * Every SQL statement inventory runs. Each state change writes its events to the outbox in
 * the same transaction, so an event is published if and only if its change committed.
 *
 * Concurrency: a change takes the row locks it needs on `stock_levels` in product id order
 * (after the order's `reservations` row, when there is one), so two transactions touching
 * the same products wait for each other instead of deadlocking. The stock rows are locked
 * last, by the UPDATEs that change them, which re-check availability on the locked row; a
 * reservation that cannot succeed is refused from a plain read and locks nothing. The
 * table's check constraints hold the invariant whatever the code does.
 */
export interface InventoryStore {
  getStock(productId: string): Promise<StockRow | undefined>;
  getStockBySku(sku: string): Promise<StockRow | undefined>;
  /** Sets on_hand (absolute), creating the record; a no-op change writes nothing. */
  setStock(change: StockChange): Promise<SetStockOutcome>;
  /**
   * Holds every item or none; idempotent on `orderId`. With a `deadline` (epoch ms, the
   * caller's), gives up with {@link DeadlinePassedError} rather than wait past it.
   */
  reserve(
    orderId: string,
    items: readonly ReservationItemRow[],
    deadline?: number,
  ): Promise<ReserveOutcome>;
  /** Releases a RESERVED reservation; records a RELEASED one for an unknown order. */
  release(orderId: string, deadline?: number): Promise<ReleaseOutcome>;
  /** Takes a RESERVED reservation's units out of stock. */
  commit(orderId: string, deadline?: number): Promise<CommitOutcome>;
  getReservation(orderId: string): Promise<ReservationRow | undefined>;
  /** Order ids of RESERVED reservations created more than `olderThanMs` ago, oldest first. */
  listExpired(olderThanMs: number, limit: number): Promise<string[]>;
  /**
   * Creates the stock records that do not exist yet (by product id or SKU); returns them.
   * Inside `within` when given (an event handler's transaction), else in its own.
   */
  insertMissing(items: readonly NewStock[], within?: TransactionSql): Promise<StockRow[]>;
}

const stockColumns = "product_id, sku, on_hand, reserved, updated_at";
const reservationColumns = "order_id, status, created_at, updated_at";

type ReservationHead = Omit<ReservationRow, "items">;

/** Postgres error code for a unique violation. */
const UNIQUE_VIOLATION = "23505";

/** Thrown inside a transaction to roll it back and answer with `outcome`. */
class Refusal<T> extends Error {
  constructor(readonly outcome: T) {
    super("refused");
  }
}

/**
 * The caller's deadline passed before the change could be made; nothing was changed. The
 * caller has stopped waiting, so finishing the work would only hold a connection and a
 * place in a stock row's lock queue for nobody.
 */
export class DeadlinePassedError extends Error {
  constructor() {
    super("the caller's deadline passed before the stock could be changed");
  }
}

/** Postgres error code when a lock is not granted within lock_timeout. */
const LOCK_NOT_AVAILABLE = "55P03";

/** The store over inventory's own database; events go to its outbox under `names`. */
export function createInventoryStore(sql: Sql, names: EventNames): InventoryStore {
  const levelChanged = (row: StockRow): OutboundEvent =>
    newEvent(StockLevelChangedSchema, { productId: row.product_id, stock: toStockLevel(row) });

  /**
   * Runs `work` in a transaction; a Refusal rolls it back and becomes the result. With a
   * `deadline`, the transaction waits for locks only until then: in a burst on one product
   * every reservation queues on that product's stock row, and a transaction kept alive
   * after its caller gave up would keep its place in that queue (and a pool connection),
   * pushing the callers still waiting, and their retries, past their own deadlines in turn.
   * The work's final writes go to `last`, to travel with the COMMIT (beginWithLast).
   */
  async function transaction<T>(
    work: (tx: Sql, last: LastWrite) => Promise<T>,
    deadline = Number.POSITIVE_INFINITY,
  ): Promise<T> {
    if (Date.now() >= deadline) throw new DeadlinePassedError();
    try {
      return await beginWithLast(sql, (tx, last) => {
        if (Number.isFinite(deadline)) {
          // Waiting for a pool connection may have used up the budget.
          const ms = Math.ceil(deadline - Date.now());
          if (ms <= 0) throw new DeadlinePassedError();
          // Sent ahead of the first statement on the same connection: no extra round trip.
          tx`select set_config('lock_timeout', ${`${ms}ms`}, true)`.execute();
        }
        return work(tx as unknown as Sql, last);
      });
    } catch (reason) {
      if (reason instanceof Refusal) return reason.outcome as T;
      if ((reason as { code?: string }).code === LOCK_NOT_AVAILABLE && Number.isFinite(deadline)) {
        throw new DeadlinePassedError();
      }
      throw reason;
    }
  }

  /**
   * Makes a refusal final: the order is recorded as RELEASED (one statement, no stock row
   * touched), so no attempt for it still in flight (a retry the mesh sent after a timeout)
   * can hold units later, and the caller, which cancels the order, has nothing to release.
   * If an attempt for the same order got its reservation first, that is the answer.
   */
  async function settleRefusal(
    orderId: string,
    sorted: readonly ReservationItemRow[],
    refusal: ReserveOutcome,
  ): Promise<ReserveOutcome> {
    const [tombstone] = await sql<{ order_id: string }[]>`
      insert into reservations (order_id, status) values (${orderId}, 'released')
      on conflict (order_id) do nothing
      returning order_id`;
    if (tombstone !== undefined) return refusal;
    const existing = await loadReservation(sql, orderId, false);
    if (existing === undefined || existing.status === "released") return refusal;
    if (!sameItems(existing.items, sorted)) return { kind: "mismatch", reservation: existing };
    return { kind: "existing", reservation: existing };
  }

  async function loadReservation(
    q: Sql,
    orderId: string,
    forUpdate: boolean,
  ): Promise<ReservationRow | undefined> {
    const readItems = () =>
      q<ReservationItemRow[]>`
        select product_id, quantity from reservation_items
        where order_id = ${orderId} order by product_id`.execute();
    const readHead = q<ReservationHead[]>`
      select ${q.unsafe(reservationColumns)} from reservations where order_id = ${orderId}
      ${forUpdate ? q`for update` : q``}`.execute();
    // Under the lock (in a transaction: one connection, statements in order) both go at
    // once, the items read once the lock is granted. Without it they may run on two pool
    // connections, so the items are read after the head: a reservation the head saw
    // committed has its items committed too.
    const [[head], items] = forUpdate
      ? await Promise.all([readHead, readItems()])
      : [await readHead, undefined];
    if (head === undefined) return undefined;
    return { ...head, items: [...(items ?? (await readItems()))] };
  }

  /**
   * Adds signed deltas to stock rows, one UPDATE per product in product id order (the
   * deadlock-free order), all sent before any answer is awaited: the row locks are taken
   * by these statements, so they come last in a transaction and each row stays locked for
   * the rest of it only (an event write and the commit), not across a read-decide-write
   * exchange with this process. With `ifAvailable`, a product whose available units would
   * drop below zero is left untouched and reported as `undefined` (the caller refuses and
   * rolls back); without, the table's check constraints are the guard. `deltas` must be
   * sorted by product id.
   */
  async function adjustStock(
    tx: Sql,
    deltas: readonly { productId: string; onHand: number; reserved: number }[],
    ifAvailable = false,
  ): Promise<(StockRow | undefined)[]> {
    // execute() sends each now, in this order; awaiting alone would send them later.
    const results = await Promise.all(
      deltas.map((d) =>
        tx<StockRow[]>`
          update stock_levels
          set on_hand = on_hand + ${d.onHand}, reserved = reserved + ${d.reserved}, updated_at = now()
          where product_id = ${d.productId}
            ${ifAvailable ? tx`and on_hand - reserved >= ${d.reserved}` : tx``}
          returning ${tx.unsafe(stockColumns)}`.execute(),
      ),
    );
    return results.map(([row]) => row);
  }

  /** The rows adjustStock changed, when it changed all `count`; else the change is a bug. */
  function changedAll(rows: readonly (StockRow | undefined)[], count: number): StockRow[] {
    const changed = rows.filter((r): r is StockRow => r !== undefined);
    if (changed.length !== count) {
      throw new Error(`stock change touched ${changed.length} of ${count} products`);
    }
    return changed;
  }

  /** Available units of each product of `items` that has a stock record, without a lock. */
  async function availableOf(
    q: Sql,
    items: readonly ReservationItemRow[],
  ): Promise<Map<string, bigint>> {
    const rows = await q<{ product_id: string; available: bigint }[]>`
      select product_id, on_hand - reserved as available from stock_levels
      where product_id in ${q(items.map((i) => i.product_id))}`;
    return new Map(rows.map((r) => [r.product_id, r.available]));
  }

  async function setStatus(
    tx: Sql,
    orderId: string,
    status: ReservationStatusText,
  ): Promise<ReservationHead> {
    const [row] = await tx<ReservationHead[]>`
      update reservations set status = ${status}, updated_at = now()
      where order_id = ${orderId}
      returning ${tx.unsafe(reservationColumns)}`;
    if (row === undefined) throw new Error("locked reservation disappeared");
    return row;
  }

  return {
    async getStock(productId) {
      const [row] = await sql<StockRow[]>`
        select ${sql.unsafe(stockColumns)} from stock_levels where product_id = ${productId}`;
      return row;
    },

    async getStockBySku(sku) {
      if (sku === "") return undefined;
      const [row] = await sql<StockRow[]>`
        select ${sql.unsafe(stockColumns)} from stock_levels where sku = ${sku}`;
      return row;
    },

    async setStock({ productId: rawId, sku, onHand }) {
      const productId = rawId.toLowerCase();
      try {
        return await transaction(async (tx): Promise<SetStockOutcome> => {
          // The product's row and the row currently holding the SKU (it moves when catalog
          // gave the SKU to another product), locked together in product id order.
          const locked = await tx<StockRow[]>`
            select ${tx.unsafe(stockColumns)} from stock_levels
            where product_id = ${productId} ${sku === "" ? tx`` : tx`or sku = ${sku}`}
            order by product_id
            for update`;
          let current = locked.find((r) => r.product_id === productId);
          let created = false;
          if (current === undefined) {
            const [inserted] = await tx<StockRow[]>`
              insert into stock_levels (product_id, on_hand) values (${productId}, 0)
              on conflict (product_id) do nothing
              returning ${tx.unsafe(stockColumns)}`;
            created = inserted !== undefined;
            // Lost a race with another first SetStock: its row is committed now.
            current =
              inserted ??
              (
                await tx<StockRow[]>`
                  select ${tx.unsafe(stockColumns)} from stock_levels
                  where product_id = ${productId} for update`
              )[0];
            if (current === undefined) throw new Error("stock row disappeared");
          }
          if (onHand < current.reserved)
            throw new Refusal({ kind: "below_reserved", stock: current });
          const events: OutboundEvent[] = [];
          if (sku !== "") {
            const moved = await tx<StockRow[]>`
              update stock_levels set sku = '', updated_at = now()
              where sku = ${sku} and product_id <> ${productId}
              returning ${tx.unsafe(stockColumns)}`;
            events.push(...moved.map(levelChanged));
          }
          const changed =
            created || current.on_hand !== onHand || (sku !== "" && current.sku !== sku);
          let stock = current;
          if (changed) {
            const [updated] = await tx<StockRow[]>`
              update stock_levels
              set on_hand = ${onHand.toString()},
                  sku = ${sku === "" ? current.sku : sku},
                  updated_at = now()
              where product_id = ${productId}
              returning ${tx.unsafe(stockColumns)}`;
            if (updated === undefined) throw new Error("locked stock row disappeared");
            stock = updated;
            events.push(levelChanged(stock));
          }
          await writeEvents(tx, names, events);
          return { kind: "set", stock };
        });
      } catch (reason) {
        // Two products claimed one new SKU at the same moment; the loser may simply retry.
        if ((reason as { code?: string }).code === UNIQUE_VIOLATION)
          return { kind: "sku_conflict" };
        throw reason;
      }
    },

    async reserve(rawOrderId, requested, deadline) {
      const orderId = rawOrderId.toLowerCase();
      const items = requested.map((i) => ({
        product_id: i.product_id.toLowerCase(),
        quantity: i.quantity,
      }));
      const sorted = [...items].sort((a, b) => compare(a.product_id, b.product_id));
      // A refusal is answered from one statement when the order has no reservation yet: a
      // plain read of the stock that, when an item falls short, also records the order as
      // released (settleRefusal's tombstone). In a flash sale most callers want a sold-out
      // product, and none of them should wait for (or take) the stock row's lock, queued
      // behind the orders that can succeed, to learn that. The read is a committed
      // snapshot, so the refusal is as true as one made under the lock a moment earlier.
      const [seen] = await sql<
        { reservation: string | null; stock: Record<string, string>; tombstoned: boolean }[]
      >`
        with wanted as (
          select * from unnest(${sql.array(sorted.map((i) => i.product_id))}::uuid[],
                               ${sql.array(sorted.map((i) => i.quantity))}::int[])
            as w(product_id, quantity)
        ),
        seen as (
          select
            (select status from reservations where order_id = ${orderId}) as reservation,
            coalesce(
              (select json_object_agg(product_id, (on_hand - reserved)::text) from stock_levels
               where product_id in (select product_id from wanted)),
              '{}'::json) as stock,
            exists (
              select 1 from wanted w left join stock_levels s on s.product_id = w.product_id
              where s.product_id is null or s.on_hand - s.reserved < w.quantity) as short
        ),
        tombstone as (
          insert into reservations (order_id, status)
          select ${orderId}::uuid, 'released' from seen where reservation is null and short
          on conflict (order_id) do nothing
          returning order_id
        )
        select reservation, stock, exists (select 1 from tombstone) as tombstoned from seen`;
      const fresh = seen !== undefined && seen.reservation === null;
      if (fresh) {
        const available = new Map(
          Object.entries(seen.stock).map(([id, units]) => [id, BigInt(units)]),
        );
        const refusal = shortageIn(items, available);
        if (refusal !== undefined) {
          return seen.tombstoned ? refusal : settleRefusal(orderId, sorted, refusal);
        }
      }
      const deltas = sorted.map((i) => ({
        productId: i.product_id,
        onHand: 0,
        reserved: i.quantity,
      }));
      const outcome = await transaction(async (tx, last): Promise<ReserveOutcome> => {
        // Claiming the order id first serializes concurrent attempts for one order: a
        // second one waits here for the first to commit (then finds its reservation) or
        // roll back (then makes its own). For an order seen without a reservation, the
        // conditional stock updates go out with the claim, unanswered, and take the row
        // locks last; a retry (the order was seen with one) answers without touching stock.
        const claim = tx<ReservationHead[]>`
          insert into reservations (order_id, status) values (${orderId}, 'reserved')
          on conflict (order_id) do nothing
          returning ${tx.unsafe(reservationColumns)}`.execute();
        const sent = fresh ? adjustStock(tx, deltas, true) : undefined;
        // When the claim fails, the transaction's error is the claim's; the updates sent
        // after it fail too, unobserved.
        sent?.catch(() => {});
        const [claimed] = await claim;
        if (claimed === undefined) {
          // Whatever the updates sent along held is rolled back with the transaction.
          await sent;
          const existing = await loadReservation(tx, orderId, false);
          if (existing === undefined) throw new Error("claimed reservation disappeared");
          if (existing.status === "released") {
            throw new Refusal({ kind: "released", reservation: existing });
          }
          if (!sameItems(existing.items, sorted)) {
            throw new Refusal({ kind: "mismatch", reservation: existing });
          }
          throw new Refusal({ kind: "existing", reservation: existing });
        }
        const rows = await (sent ?? adjustStock(tx, deltas, true));
        const short = new Set(sorted.filter((_, k) => rows[k] === undefined));
        const first = items.find((i) => [...short].some((s) => s.product_id === i.product_id));
        if (first !== undefined) {
          // Sold between the lock-free read and the update. The reason comes from a fresh
          // read; should units have come back in that instant, the refusal still names the
          // product the update found short, with what is available now.
          const available = await availableOf(tx, items);
          throw new Refusal(
            shortageIn(items, available) ?? {
              kind: "insufficient",
              productId: first.product_id,
              requested: first.quantity,
              available: available.get(first.product_id) ?? 0n,
            },
          );
        }
        const levels = changedAll(rows, sorted.length);
        last(
          tx`
            insert into reservation_items ${tx(
              sorted.map((i) => ({ order_id: orderId, ...i })),
              "order_id",
              "product_id",
              "quantity",
            )}`.execute(),
        );
        last(
          writeEvents(tx, names, [
            newEvent(StockReservedSchema, { orderId, items: toReservationItems(sorted) }),
            ...levels.map(levelChanged),
          ]),
        );
        return { kind: "reserved", reservation: { ...claimed, items: sorted } };
      }, deadline);
      return outcome.kind === "insufficient" || outcome.kind === "unknown_product"
        ? settleRefusal(orderId, sorted, outcome)
        : outcome;
    },

    async release(rawOrderId, deadline) {
      const orderId = rawOrderId.toLowerCase();
      if (deadline !== undefined && Date.now() >= deadline) throw new DeadlinePassedError();
      // The common release in a flash sale is of an order refused as out of stock, which
      // holds nothing: its RELEASED record is one statement, outside a transaction. (It
      // waits only for a reservation of the same order being made right now, which gives
      // up at its own caller's deadline.)
      const [tombstone] = await sql<ReservationHead[]>`
        insert into reservations (order_id, status) values (${orderId}, 'released')
        on conflict (order_id) do nothing
        returning ${sql.unsafe(reservationColumns)}`;
      if (tombstone !== undefined) {
        return { kind: "released", reservation: { ...tombstone, items: [] }, unitsReleased: false };
      }
      return transaction(async (tx, last): Promise<ReleaseOutcome> => {
        // A release that comes first leaves a RELEASED record, so a ReserveStock for the
        // order arriving late (the saga compensated after a timeout) is refused.
        const [tombstone] = await tx<ReservationHead[]>`
          insert into reservations (order_id, status) values (${orderId}, 'released')
          on conflict (order_id) do nothing
          returning ${tx.unsafe(reservationColumns)}`;
        if (tombstone !== undefined) {
          return {
            kind: "released",
            reservation: { ...tombstone, items: [] },
            unitsReleased: false,
          };
        }
        const current = await loadReservation(tx, orderId, true);
        if (current === undefined) throw new Error("claimed reservation disappeared");
        if (current.status === "committed") return { kind: "committed", reservation: current };
        if (current.status === "released") {
          return { kind: "released", reservation: current, unitsReleased: false };
        }
        const [head, rows] = await Promise.all([
          setStatus(tx, orderId, "released"),
          adjustStock(
            tx,
            current.items.map((i) => ({
              productId: i.product_id,
              onHand: 0,
              reserved: -i.quantity,
            })),
          ),
        ]);
        const levels = changedAll(rows, current.items.length);
        last(
          writeEvents(tx, names, [
            newEvent(StockReleasedSchema, { orderId, items: toReservationItems(current.items) }),
            ...levels.map(levelChanged),
          ]),
        );
        return {
          kind: "released",
          reservation: { ...head, items: current.items },
          unitsReleased: true,
        };
      }, deadline);
    },

    commit(rawOrderId, deadline) {
      const orderId = rawOrderId.toLowerCase();
      return transaction(async (tx, last): Promise<CommitOutcome> => {
        const current = await loadReservation(tx, orderId, true);
        if (current === undefined) return { kind: "not_found" };
        if (current.status !== "reserved") {
          return { kind: current.status, reservation: current };
        }
        const [head, rows] = await Promise.all([
          setStatus(tx, orderId, "committed"),
          adjustStock(
            tx,
            current.items.map((i) => ({
              productId: i.product_id,
              onHand: -i.quantity,
              reserved: -i.quantity,
            })),
          ),
        ]);
        const levels = changedAll(rows, current.items.length);
        last(
          writeEvents(tx, names, [
            newEvent(StockCommittedSchema, { orderId, items: toReservationItems(current.items) }),
            ...levels.map(levelChanged),
          ]),
        );
        return { kind: "committed", reservation: { ...head, items: current.items } };
      }, deadline);
    },

    getReservation(orderId) {
      return loadReservation(sql, orderId.toLowerCase(), false);
    },

    async listExpired(olderThanMs, limit) {
      const rows = await sql<{ order_id: string }[]>`
        select order_id from reservations
        where status = 'reserved'
          and created_at < now() - ${String(olderThanMs)}::bigint * interval '1 millisecond'
        order by created_at
        limit ${limit}`;
      return rows.map((r) => r.order_id);
    },

    async insertMissing(items, within) {
      if (items.length === 0) return [];
      const values = items.map((i) => ({
        product_id: i.productId.toLowerCase(),
        sku: i.sku ?? "",
        on_hand: i.onHand.toString(),
      }));
      const insert = async (tx: Sql): Promise<StockRow[]> => {
        const inserted = await tx<StockRow[]>`
          insert into stock_levels ${tx(values, "product_id", "sku", "on_hand")}
          on conflict do nothing
          returning ${tx.unsafe(stockColumns)}`;
        await writeEvents(tx, names, inserted.map(levelChanged));
        return [...inserted];
      };
      return within === undefined ? transaction(insert) : insert(within as unknown as Sql);
    },
  };
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The refusal for `items` given what is available of each product (absent: no stock
 * record): an unknown product before a shortage anywhere, since it is permanent while a
 * shortage may pass, so the caller learns first what no retry can fix; each in request
 * order. Undefined when every item can be held.
 */
function shortageIn(
  items: readonly ReservationItemRow[],
  available: ReadonlyMap<string, bigint>,
): ReserveOutcome | undefined {
  for (const item of items) {
    if (!available.has(item.product_id)) {
      return { kind: "unknown_product", productId: item.product_id };
    }
  }
  for (const item of items) {
    const units = available.get(item.product_id) ?? 0n;
    if (units < BigInt(item.quantity)) {
      return {
        kind: "insufficient",
        productId: item.product_id,
        requested: item.quantity,
        available: units,
      };
    }
  }
  return undefined;
}

/** Whether two item lists (each sorted by product id) hold the same quantities. */
function sameItems(a: readonly ReservationItemRow[], b: readonly ReservationItemRow[]): boolean {
  return (
    a.length === b.length &&
    a.every((x, i) => x.product_id === b[i]?.product_id && x.quantity === b[i]?.quantity)
  );
}
