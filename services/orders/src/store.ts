import {
  type EventNames,
  newEvent,
  type OutboundEvent,
  outboxRows,
  type Sql,
  type StoredTraceContext,
  writeEvents,
} from "@meshmart/kit";
import {
  OrderCancelledSchema,
  OrderConfirmedSchema,
  OrderPlacedSchema,
} from "@meshmart/kit/gen/meshmart/orders/v1/events_pb.js";
import { toOrder } from "./order-mapper.js";
import type { PricedOrder } from "./pricing.js";

/** Where an order is (OrderStatus without its prefix). */
export type OrderStatusText = "PENDING" | "CONFIRMED" | "CANCELLED";

/** Why an order was cancelled (CancelCode without its prefix), '' when it was not. */
export type CancelCodeText =
  | ""
  | "CUSTOMER_REQUESTED"
  | "OUT_OF_STOCK"
  | "PAYMENT_DECLINED"
  | "PRODUCT_UNAVAILABLE"
  | "INTERNAL_ERROR";

/** An order as stored. */
export interface OrderRow {
  id: string;
  seq: bigint;
  user_id: string;
  request_id: string;
  request_hash: string;
  status: OrderStatusText;
  currency: string;
  total_units: bigint;
  total_nanos: number;
  cancel_code: CancelCodeText;
  cancel_reason: string;
  payment_id: string | null;
  card_last4: string;
  created_at: Date;
  updated_at: Date;
}

/** An order line as stored (the order's currency applies). */
export interface OrderItemRow {
  order_id: string;
  position: number;
  product_id: string;
  sku: string;
  name: string;
  quantity: number;
  unit_units: bigint;
  unit_nanos: number;
  line_units: bigint;
  line_nanos: number;
}

/** An order with its lines, in position order. */
export interface OrderRecord {
  order: OrderRow;
  items: OrderItemRow[];
}

/** A saga step: forward, compensating, or DONE (the order is terminal). */
export type SagaStep =
  | "RESERVE"
  | "AUTHORIZE"
  | "COMMIT_STOCK"
  | "CAPTURE"
  | "RELEASE"
  | "VOID"
  | "REFUND"
  | "DONE";

/** What the saga knows of the order's stock at inventory. */
export type StockState = "NONE" | "RESERVED" | "COMMITTED" | "RELEASED";

/** What the saga knows of the order's payment. */
export type PaymentState = "NONE" | "AUTHORIZED" | "DECLINED" | "CAPTURED" | "VOIDED" | "REFUNDED";

/** A saga as stored. */
export interface SagaRow {
  order_id: string;
  step: SagaStep;
  attempts: number;
  next_attempt_at: Date;
  claim_token: string | null;
  cancel_requested: boolean;
  cancel_code: CancelCodeText;
  cancel_reason: string;
  stock_state: StockState;
  payment_state: PaymentState;
  payment_id: string | null;
  auth_sent: boolean;
  commit_sent: boolean;
  card_sealed: Buffer | null;
  last_error: string | null;
  /** The trace of the PlaceOrder call (W3C headers), which every step continues. */
  trace_context: StoredTraceContext | null;
}

/** Facts a step learned, written with its transition. */
export interface SagaChanges {
  stock_state?: StockState;
  payment_state?: PaymentState;
  /** Also becomes the order's payment_id when the payment is authorized. */
  payment_id?: string;
  /** Drop the sealed card (the authorization has an outcome). */
  wipe_card?: boolean;
  cancel_code?: CancelCodeText;
  cancel_reason?: string;
}

/**
 * Where a saga goes after a step, decided against the saga as it is when the result is
 * recorded (a customer may have cancelled meanwhile).
 */
export type Transition =
  /** Run `step` now. */
  | { kind: "next"; step: Exclude<SagaStep, "DONE">; changes?: SagaChanges }
  /** Run the same step again after `delayMs`. */
  | { kind: "retry"; delayMs: number; error: string; changes?: SagaChanges }
  /** The order is CONFIRMED (OrderConfirmed), the saga DONE. */
  | { kind: "confirm"; changes?: SagaChanges }
  /** The order is CANCELLED with the saga's cancel code and reason (OrderCancelled), the saga DONE. */
  | { kind: "cancel"; changes?: SagaChanges };

/** What recording a step's result led to. */
export type RecordOutcome =
  /** The next step is claimed for the same worker: run it. */
  | { kind: "claimed"; transition: Transition["kind"]; saga: SagaRow }
  /** The saga waits (a retry, or a next step left for any replica because this one stops). */
  | { kind: "parked"; transition: Transition["kind"] }
  /** The order is terminal. */
  | { kind: "finished"; transition: Transition["kind"]; record: OrderRecord }
  /** The claim lapsed and someone else may run the step: the result is dropped. */
  | { kind: "lost" };

/** Everything PlaceOrder persists. */
export interface NewOrder {
  id: string;
  userId: string;
  requestId: string;
  requestHash: string;
  priced: PricedOrder;
  cardLast4: string;
  cardSealed: Buffer;
  /** The request's trace (traceContextOf), stored with the saga. */
  traceContext?: StoredTraceContext;
  /** The saga's first step is claimed for the caller for this long (it runs it now). */
  leaseMs: number;
  /**
   * The order is refused as it is placed (the sold-out hints say its stock is gone): it is
   * created CANCELLED with this code and reason, its saga already DONE and no card kept,
   * and its OrderPlaced and OrderCancelled go out together.
   */
  refusal?: { code: CancelCodeText; reason: string };
}

/** Outcome of an idempotent PlaceOrder. */
export type CreateOutcome =
  /** `claim`: the saga, its first step claimed for the caller. */
  | { kind: "created"; record: OrderRecord; claim: ClaimedSaga }
  /** Created CANCELLED (NewOrder.refusal): nothing is left to run. */
  | { kind: "refused"; record: OrderRecord }
  | { kind: "replayed"; record: OrderRecord }
  | { kind: "conflict" };

/** How a cancellation request meets the saga (see planCancel in saga.ts). */
export type CancelPlan =
  /** No step is running: start the compensation now. */
  | "compensate"
  /** A forward step is in flight: its worker compensates when it records the result. */
  | "flag"
  /** The saga is compensating already (cancelled for another reason). */
  | "cancelling"
  /** Stock may be committed: the order can only be confirmed now. */
  | "too_late";

/** Outcome of CancelOrder's write. */
export type CancelOutcome =
  | { kind: "not_found" }
  | { kind: "terminal"; record: OrderRecord }
  | { kind: "planned"; plan: CancelPlan };

/** Where a page of ListOrders starts and whose orders it holds. */
export interface ListQuery {
  /** Only this user's orders; every order when undefined. */
  userId?: string;
  /** Orders older than this seq. */
  beforeSeq?: bigint;
  limit: number;
}

/**
 * A claimed saga with its order as the claim found it: only the claim holder changes an
 * order after PlaceOrder, so the step needs no read of its own. Undefined only if the
 * order row is missing (a bug the worker reports).
 */
export interface ClaimedSaga {
  saga: SagaRow;
  record: OrderRecord | undefined;
}

/** Every SQL statement orders runs. */
export interface OrdersStore {
  /**
   * Creates the order, its lines, its saga and OrderPlaced once per (user, request id); the
   * saga's first step comes back claimed by the caller, counted as its first attempt.
   */
  create(order: NewOrder): Promise<CreateOutcome>;
  findByRequest(userId: string, requestId: string): Promise<OrderRecord | undefined>;
  /** The order, if it exists and (with `userId`) belongs to that user. */
  get(orderId: string, userId?: string): Promise<OrderRecord | undefined>;
  /** Newest first. */
  list(query: ListQuery): Promise<OrderRecord[]>;
  /**
   * Applies a customer's cancellation to the saga, as `plan` decides from the saga and
   * whether a step is in flight (claimed, lease not lapsed).
   */
  requestCancel(
    orderId: string,
    userId: string | undefined,
    reason: string,
    plan: (saga: SagaRow, inFlight: boolean) => CancelPlan,
  ): Promise<CancelOutcome>;
  /**
   * Claims up to `limit` due sagas for `leaseMs` (skipping rows another replica is claiming
   * right now), earliest due first, and counts the attempt.
   */
  claimDue(limit: number, leaseMs: number): Promise<ClaimedSaga[]>;
  /**
   * Records a step's result under the claim `token`: `decide` sees the saga as it is now
   * and returns the transition, which is written in the same transaction (with the
   * terminal order update and its event). With `keepClaim`, a next step stays claimed by
   * the caller for `leaseMs`; without, it is left due for any replica.
   */
  record(
    orderId: string,
    token: string,
    decide: (saga: SagaRow) => Transition,
    options: {
      leaseMs: number;
      keepClaim: boolean;
      /**
       * The saga as the caller's claim returned it. A step that moves only the saga is
       * then written without a lock when the row is still so (checked in the write).
       */
      known?: SagaRow;
      /**
       * The order as the caller read it when it claimed the saga. With `known`, a terminal
       * transition is then written in one statement when the rows are still as expected.
       */
      order?: OrderRecord;
    },
  ): Promise<RecordOutcome>;
  getSaga(orderId: string): Promise<SagaRow | undefined>;
}

const orderColumns =
  "id, seq, user_id, request_id, request_hash, status, currency, total_units, total_nanos, cancel_code, cancel_reason, payment_id, card_last4, created_at, updated_at";
const itemColumns =
  "order_id, position, product_id, sku, name, quantity, unit_units, unit_nanos, line_units, line_nanos";
const sagaColumns =
  "order_id, step, attempts, next_attempt_at, claim_token, cancel_requested, cancel_code, cancel_reason, stock_state, payment_state, payment_id, auth_sent, commit_sent, card_sealed, last_error, trace_context";

/** orders' columns as `o_<column>`, next to a saga's in one row. */
const prefixedOrderColumns = orderColumns
  .split(", ")
  .map((c) => `o.${c} as o_${c}`)
  .join(", ");
type PrefixedOrder = { [K in keyof OrderRow as `o_${K}`]: OrderRow[K] | null };

/**
 * The lines of the order whose id is `orderIdColumn`, as one JSON array in position order
 * (money units as text: no bigint through a double), `[]` when it has none.
 */
function linesOf(orderIdColumn: string): string {
  return `coalesce(
    (select json_agg(json_build_object(
        'position', position, 'product_id', product_id, 'sku', sku, 'name', name,
        'quantity', quantity, 'unit_units', unit_units::text, 'unit_nanos', unit_nanos,
        'line_units', line_units::text, 'line_nanos', line_nanos) order by position)
     from order_items where order_id = ${orderIdColumn}),
    '[]'::json)`;
}

/** An order's lines from their JSON form (getIn, claimDue), money units back to bigint. */
function itemsFrom(orderId: string, lines: readonly JsonItem[]): OrderItemRow[] {
  return lines.map((l) => ({
    ...l,
    order_id: orderId,
    unit_units: BigInt(l.unit_units),
    line_units: BigInt(l.line_units),
  }));
}

/** An order line as getIn reads it: money units as text, so no bigint passes through a double. */
type JsonItem = Omit<OrderItemRow, "order_id" | "unit_units" | "line_units"> & {
  unit_units: string;
  line_units: string;
};

/** Thrown inside create's transaction to roll it back: another request took the request id. */
/** Whether an insert failed because the user already placed an order with this request id. */
function isRequestIdTaken(reason: unknown): boolean {
  const err = reason as { code?: unknown; constraint_name?: unknown };
  return err.code === "23505" && err.constraint_name === "orders_user_id_request_id_key";
}

/** The pool or a transaction on it (what writeEvents takes too). */
type Db = Parameters<typeof writeEvents>[0];

/** Whether a request had a trace worth storing with its saga. */
function hasTrace(stored: StoredTraceContext | undefined): stored is StoredTraceContext {
  return stored !== undefined && Object.keys(stored).length > 0;
}

/** `ms` as an interval parameter. */
function seconds(ms: number): number {
  return Math.max(0, ms) / 1000;
}

/** The columns a transition's changes write (undefined ones untouched). */
function changedColumns(changes: SagaChanges | undefined): Record<string, string | number | null> {
  const columns: Record<string, string | number | null> = {};
  if (changes === undefined) return columns;
  if (changes.stock_state !== undefined) columns.stock_state = changes.stock_state;
  if (changes.payment_state !== undefined) columns.payment_state = changes.payment_state;
  if (changes.payment_id !== undefined) columns.payment_id = changes.payment_id;
  if (changes.wipe_card === true) columns.card_sealed = null;
  if (changes.cancel_code !== undefined) columns.cancel_code = changes.cancel_code;
  if (changes.cancel_reason !== undefined) columns.cancel_reason = changes.cancel_reason;
  return columns;
}

/** Whether a transition writes the order row too (its payment id), not only the saga. */
function touchesOrder(transition: Transition): boolean {
  return (
    transition.changes?.payment_id !== undefined &&
    transition.changes.payment_state === "AUTHORIZED"
  );
}

/** Whether anyone but the claim holder changed what a step's decision reads. */
function unchangedSince(now: SagaRow, known: SagaRow): boolean {
  return (
    now.claim_token === known.claim_token &&
    now.step === known.step &&
    now.cancel_requested === known.cancel_requested &&
    now.cancel_code === known.cancel_code &&
    now.cancel_reason === known.cancel_reason
  );
}

/**
 * Writes a transition that keeps the saga going ("next" or "retry") in one statement. With
 * `known`, only if the row is still as the claim holder knew it (claim and cancellation
 * unchanged; nothing else is written by anyone else while a claim is live), else nothing
 * is written and the result is undefined; without, the caller holds the row's lock.
 */
async function writeStep(
  db: Db,
  orderId: string,
  transition: Extract<Transition, { kind: "next" | "retry" }>,
  { leaseMs, keepClaim }: { leaseMs: number; keepClaim: boolean },
  known?: SagaRow,
): Promise<RecordOutcome | undefined> {
  // The authorized payment's id goes on the order in the same statement (a data-modifying
  // CTE after the saga's update, so only if that matched): one round trip, where a
  // transaction with the row locked took five.
  const paymentId =
    known !== undefined && touchesOrder(transition) ? transition.changes?.payment_id : undefined;
  const withOrder = (update: ReturnType<Db>) =>
    paymentId === undefined
      ? update
      : db`
        with s as (${update}),
        o as (
          update orders set payment_id = ${paymentId}, updated_at = now()
          where id in (select order_id from s) and payment_id is null)
        select * from s`;
  const guard =
    known === undefined
      ? db``
      : db`and claim_token = ${known.claim_token} and step = ${known.step}
           and cancel_requested = ${known.cancel_requested}
           and cancel_code = ${known.cancel_code} and cancel_reason = ${known.cancel_reason}`;
  // Every branch writes last_error, so the column list is never empty.
  const columns = changedColumns(transition.changes);
  if (transition.kind === "retry") {
    const rows = await withOrder(db`
      update order_sagas set ${db({ ...columns, last_error: transition.error })},
        claim_token = null,
        next_attempt_at = now() + make_interval(secs => ${seconds(transition.delayMs)}),
        updated_at = now()
      where order_id = ${orderId} ${guard}
      returning order_id`);
    return rows.length === 0 ? undefined : { kind: "parked", transition: transition.kind };
  }
  const { step } = transition;
  if (!keepClaim) {
    const rows = await withOrder(db`
      update order_sagas set ${db({ ...columns, step, attempts: 0, last_error: null })},
        claim_token = null, next_attempt_at = now(), updated_at = now()
      where order_id = ${orderId} ${guard}
      returning order_id`);
    return rows.length === 0 ? undefined : { kind: "parked", transition: transition.kind };
  }
  const [next] = await withOrder(db`
    update order_sagas set ${db({ ...columns, step, attempts: 1, last_error: null })},
      claim_token = gen_random_uuid(),
      next_attempt_at = now() + make_interval(secs => ${seconds(leaseMs)}),
      auth_sent = auth_sent or ${step} = 'AUTHORIZE',
      commit_sent = commit_sent or ${step} = 'COMMIT_STOCK',
      updated_at = now()
    where order_id = ${orderId} ${guard}
    returning ${db.unsafe(sagaColumns)}`);
  return next === undefined
    ? undefined
    : { kind: "claimed", transition: transition.kind, saga: next as unknown as SagaRow };
}

/**
 * The store over orders' own database. Order state changes write their event to the outbox
 * in the same transaction.
 */
export function createOrdersStore(sql: Sql, names: EventNames): OrdersStore {
  async function itemsOf(tx: Db, orderIds: string[]): Promise<Map<string, OrderItemRow[]>> {
    const byOrder = new Map<string, OrderItemRow[]>();
    if (orderIds.length === 0) return byOrder;
    const rows = await tx<OrderItemRow[]>`
      select ${tx.unsafe(itemColumns)} from order_items
      where order_id in ${tx(orderIds)}
      order by order_id, position`;
    for (const row of rows) {
      const list = byOrder.get(row.order_id);
      if (list === undefined) byOrder.set(row.order_id, [row]);
      else list.push(row);
    }
    return byOrder;
  }

  async function withItems(tx: Db, orders: OrderRow[]): Promise<OrderRecord[]> {
    const items = await itemsOf(
      tx,
      orders.map((o) => o.id),
    );
    return orders.map((order) => ({ order, items: items.get(order.id) ?? [] }));
  }

  /**
   * One order with its lines in one statement (the lines as JSON, money as text): this is
   * what every WatchOrder wake-up and every saga reads, so it costs one round trip.
   */
  async function getIn(tx: Db, orderId: string, userId?: string): Promise<OrderRecord | undefined> {
    const owner = userId === undefined ? tx`` : tx`and user_id = ${userId}`;
    const [row] = await tx<(OrderRow & { lines: JsonItem[] })[]>`
      select ${tx.unsafe(orderColumns)},
        ${tx.unsafe(linesOf("orders.id"))} as lines
      from orders where id = ${orderId} ${owner}`;
    if (row === undefined) return undefined;
    const { lines, ...order } = row;
    return { order, items: itemsFrom(order.id, lines) };
  }

  /** The request's trace as the saga row keeps it (null when there is none). */
  function storedTrace(o: NewOrder) {
    return hasTrace(o.traceContext) ? sql.json({ ...o.traceContext }) : null;
  }

  /** The order a retried PlaceOrder (same user and request id) placed before. */
  async function existingFor(o: NewOrder): Promise<CreateOutcome> {
    const [existing] = await sql<OrderRow[]>`
      select ${sql.unsafe(orderColumns)} from orders
      where user_id = ${o.userId} and request_id = ${o.requestId}`;
    if (existing === undefined) throw new Error("request id conflict without an order");
    if (existing.request_hash !== o.requestHash) return { kind: "conflict" };
    const replayed = await getIn(sql, existing.id);
    if (replayed === undefined) throw new Error("replayed order vanished");
    return { kind: "replayed", record: replayed };
  }

  /**
   * The order born CANCELLED, in one statement: its lines, a saga already DONE (so every
   * order has one, as CancelOrder and the tests expect), and both its events, placed then
   * cancelled, in that order.
   */
  async function createRefused(
    o: NewOrder,
    cancelled: OrderRecord,
    events: readonly OutboundEvent[],
  ): Promise<CreateOutcome> {
    const { order, items } = cancelled;
    const lines = itemRows(items);
    const rows = outboxRows(names, events);
    const trace = storedTrace(o);
    try {
      const [row] = await sql<{ seq: bigint }[]>`
        with o as (
          insert into orders (id, user_id, request_id, request_hash, status, currency,
                              total_units, total_nanos, cancel_code, cancel_reason, card_last4,
                              created_at, updated_at)
          values (${order.id}, ${order.user_id}, ${order.request_id}, ${order.request_hash},
                  'CANCELLED', ${order.currency}, ${order.total_units.toString()},
                  ${order.total_nanos}, ${order.cancel_code}, ${order.cancel_reason},
                  ${order.card_last4}, ${order.created_at}, ${order.updated_at})
          returning seq),
        l as (
          insert into order_items ${sql(lines, "order_id", "position", "product_id", "sku", "name", "quantity", "unit_units", "unit_nanos", "line_units", "line_nanos")}),
        s as (
          insert into order_sagas (order_id, step, trace_context, cancel_code, cancel_reason,
                                   stock_state)
          values (${order.id}, 'DONE', ${trace}, ${order.cancel_code}, ${order.cancel_reason},
                  'RELEASED')),
        e as (
          insert into event_outbox ${sql(rows, "event_id", "subject", "event_type", "payload", "headers")})
        select seq from o`;
      if (row === undefined) throw new Error("the order insert returned no row");
      order.seq = BigInt(row.seq);
      return { kind: "refused", record: cancelled };
    } catch (reason) {
      if (!isRequestIdTaken(reason)) throw reason;
    }
    return existingFor(o);
  }

  /** Makes the order terminal with its event; the saga row is already locked by the caller. */
  async function finish(
    tx: Db,
    saga: SagaRow,
    status: "CONFIRMED" | "CANCELLED",
    changes: SagaChanges | undefined,
  ): Promise<OrderRecord> {
    const code: CancelCodeText =
      status === "CONFIRMED" ? "" : changes?.cancel_code || saga.cancel_code || "INTERNAL_ERROR";
    const reason = status === "CONFIRMED" ? "" : (changes?.cancel_reason ?? saga.cancel_reason);
    const { card_sealed: _wiped, ...columns } = changedColumns(changes);
    const paymentId = status === "CONFIRMED" ? (changes?.payment_id ?? saga.payment_id) : null;
    // Sent together, answered in one round trip (the event needs the order as updated).
    const [, [order], items] = await Promise.all([
      tx`
        update order_sagas set ${tx({ ...columns, step: "DONE", last_error: null })},
          claim_token = null, card_sealed = null, updated_at = now()
        where order_id = ${saga.order_id}`.execute(),
      tx<OrderRow[]>`
        update orders set status = ${status}, cancel_code = ${code}, cancel_reason = ${reason},
          payment_id = coalesce(payment_id, ${paymentId}::uuid), updated_at = now()
        where id = ${saga.order_id} and status = 'PENDING'
        returning ${tx.unsafe(orderColumns)}`.execute(),
      itemsOf(tx, [saga.order_id]),
    ]);
    if (order === undefined) {
      // Only the saga makes an order terminal, under this saga row's lock: a second
      // terminal write means the rows disagree, which must not be papered over.
      throw new Error(`order ${saga.order_id} is not PENDING while its saga was running`);
    }
    const record: OrderRecord = { order, items: items.get(order.id) ?? [] };
    const init = { orderId: order.id, userId: order.user_id, order: toOrder(record) };
    await writeEvents(tx, names, [
      status === "CONFIRMED"
        ? newEvent(OrderConfirmedSchema, init)
        : newEvent(OrderCancelledSchema, init),
    ]);
    return record;
  }

  /**
   * The terminal write of {@link finish} as one statement, without a lock: the saga goes
   * DONE only if it is still as its claim holder knew it (claim, step, cancellation) and
   * the order still as `record` shows it (PENDING, its payment id), then the order turns
   * terminal and its event goes to the outbox, all or nothing. Only the claim holder
   * writes an order after PlaceOrder, so the order and its event can be built here,
   * `updated_at` included, from what the caller read. Undefined when nothing matched (the
   * caller then locks the row and decides again).
   */
  async function finishGuarded(
    known: SagaRow,
    record: OrderRecord,
    transition: Extract<Transition, { kind: "confirm" | "cancel" }>,
  ): Promise<RecordOutcome | undefined> {
    const { changes } = transition;
    const status = transition.kind === "confirm" ? "CONFIRMED" : "CANCELLED";
    const code: CancelCodeText =
      status === "CONFIRMED" ? "" : changes?.cancel_code || known.cancel_code || "INTERNAL_ERROR";
    const reason = status === "CONFIRMED" ? "" : (changes?.cancel_reason ?? known.cancel_reason);
    const before = record.order;
    // The caller may have read the order before an authorization put the saga's payment id
    // on it (writeStep): expect that one. A wrong guess only costs the locked path.
    const paymentBefore = before.payment_id ?? known.payment_id;
    const paymentAfter =
      status === "CONFIRMED"
        ? (paymentBefore ?? changes?.payment_id ?? known.payment_id)
        : paymentBefore;
    const order: OrderRow = {
      ...before,
      status,
      cancel_code: code,
      cancel_reason: reason,
      payment_id: paymentAfter,
      updated_at: new Date(),
    };
    const done: OrderRecord = { order, items: record.items };
    const init = { orderId: order.id, userId: order.user_id, order: toOrder(done) };
    const [event] = outboxRows(names, [
      status === "CONFIRMED"
        ? newEvent(OrderConfirmedSchema, init)
        : newEvent(OrderCancelledSchema, init),
    ]);
    if (event === undefined) return undefined;
    const { card_sealed: _wiped, ...columns } = changedColumns(changes);
    const [row] = await sql<{ written: number }[]>`
      with s as (
        update order_sagas set ${sql({ ...columns, step: "DONE", last_error: null })},
          claim_token = null, card_sealed = null, updated_at = now()
        where order_id = ${order.id} and claim_token = ${known.claim_token}
          and step = ${known.step} and cancel_requested = ${known.cancel_requested}
          and cancel_code = ${known.cancel_code} and cancel_reason = ${known.cancel_reason}
          and exists (
            select 1 from orders where id = ${order.id} and status = 'PENDING'
              and payment_id is not distinct from ${paymentBefore}::uuid)
        returning order_id),
      o as (
        update orders set status = ${status}, cancel_code = ${code}, cancel_reason = ${reason},
          payment_id = ${paymentAfter}::uuid, updated_at = ${order.updated_at}
        where id in (select order_id from s)
        returning id),
      e as (
        insert into event_outbox (event_id, subject, event_type, payload, headers)
        select ${event.event_id}::uuid, ${event.subject}, ${event.event_type}, ${event.payload},
          ${sql.json(event.headers)}::jsonb
        from o
        returning event_id)
      select (select count(*) from e)::int as written`;
    if (row?.written !== 1) return undefined;
    return { kind: "finished", transition: transition.kind, record: done };
  }

  return {
    async create(o) {
      const { priced } = o;
      // The order is built here, timestamps included, so its OrderPlaced event can go out
      // in the same statement: one round trip instead of a transaction's four, which in a
      // burst is what PlaceOrder waits for (a pool connection held for each round trip).
      const now = new Date();
      const items: OrderItemRow[] = priced.lines.map((line, position) => ({
        order_id: o.id,
        position,
        product_id: line.productId,
        sku: line.sku,
        name: line.name,
        quantity: line.quantity,
        unit_units: line.unit.units,
        unit_nanos: line.unit.nanos,
        line_units: line.line.units,
        line_nanos: line.line.nanos,
      }));
      const order: OrderRow = {
        id: o.id,
        seq: 0n,
        user_id: o.userId,
        request_id: o.requestId,
        request_hash: o.requestHash,
        status: "PENDING",
        currency: priced.currency,
        total_units: priced.total.units,
        total_nanos: priced.total.nanos,
        cancel_code: "",
        cancel_reason: "",
        payment_id: null,
        card_last4: o.cardLast4,
        created_at: now,
        updated_at: now,
      };
      const created: OrderRecord = { order, items };
      const placed = newEvent(OrderPlacedSchema, {
        orderId: o.id,
        userId: o.userId,
        order: toOrder(created),
      });
      if (o.refusal !== undefined) {
        const cancelled: OrderRecord = {
          order: {
            ...order,
            status: "CANCELLED",
            cancel_code: o.refusal.code,
            cancel_reason: o.refusal.reason,
          },
          items,
        };
        const init = { orderId: o.id, userId: o.userId, order: toOrder(cancelled) };
        return createRefused(o, cancelled, [placed, newEvent(OrderCancelledSchema, init)]);
      }
      const [event] = outboxRows(names, [placed]);
      if (event === undefined) throw new Error("OrderPlaced was not built");
      const lines = itemRows(items);
      const trace = storedTrace(o);
      try {
        // A retry (same user and request id) fails the whole statement on the orders
        // unique key, so nothing of it is written; the order it retries is read below.
        const [row] = await sql<(SagaRow & { o_seq: bigint })[]>`
          with o as (
            insert into orders (id, user_id, request_id, request_hash, status, currency,
                                total_units, total_nanos, card_last4, created_at, updated_at)
            values (${o.id}, ${o.userId}, ${o.requestId}, ${o.requestHash}, 'PENDING',
                    ${priced.currency}, ${priced.total.units.toString()}, ${priced.total.nanos},
                    ${o.cardLast4}, ${now}, ${now})
            returning seq),
          l as (
            insert into order_items ${sql(lines, "order_id", "position", "product_id", "sku", "name", "quantity", "unit_units", "unit_nanos", "line_units", "line_nanos")}),
          s as (
            insert into order_sagas (order_id, step, card_sealed, trace_context, claim_token,
                                     attempts, next_attempt_at)
            values (${o.id}, 'RESERVE', ${o.cardSealed}, ${trace}, gen_random_uuid(), 1,
                    now() + make_interval(secs => ${seconds(o.leaseMs)}))
            returning ${sql.unsafe(sagaColumns)}),
          e as (
            insert into event_outbox (event_id, subject, event_type, payload, headers)
            values (${event.event_id}::uuid, ${event.subject}, ${event.event_type},
                    ${event.payload}, ${sql.json(event.headers)}::jsonb))
          select o.seq as o_seq, s.* from o cross join s`;
        if (row === undefined) throw new Error("the order insert returned no row");
        const { o_seq: seq, ...saga } = row;
        order.seq = BigInt(seq);
        return { kind: "created", record: created, claim: { saga, record: created } };
      } catch (reason) {
        if (!isRequestIdTaken(reason)) throw reason;
      }
      return existingFor(o);
    },

    async findByRequest(userId, requestId) {
      const [order] = await sql<OrderRow[]>`
        select ${sql.unsafe(orderColumns)} from orders
        where user_id = ${userId} and request_id = ${requestId}`;
      if (order === undefined) return undefined;
      const [record] = await withItems(sql, [order]);
      return record;
    },

    get(orderId, userId) {
      return getIn(sql, orderId, userId);
    },

    async list({ userId, beforeSeq, limit }) {
      const owner = userId === undefined ? sql`` : sql`and user_id = ${userId}`;
      const cursor = beforeSeq === undefined ? sql`` : sql`and seq < ${beforeSeq.toString()}`;
      const orders = await sql<OrderRow[]>`
        select ${sql.unsafe(orderColumns)} from orders
        where true ${owner} ${cursor}
        order by seq desc
        limit ${limit}`;
      return withItems(sql, orders);
    },

    async requestCancel(orderId, userId, reason, plan) {
      // Lock order: the saga row, then the order (as recording a step does); the order
      // is read without a lock first, for the ownership check.
      const existing = await getIn(sql, orderId, userId);
      if (existing === undefined) return { kind: "not_found" };
      if (existing.order.status !== "PENDING") return { kind: "terminal", record: existing };
      return sql.begin(async (tx): Promise<CancelOutcome> => {
        const [saga] = await tx<(SagaRow & { in_flight: boolean })[]>`
          select ${tx.unsafe(sagaColumns)},
            (claim_token is not null and next_attempt_at > now()) as in_flight
          from order_sagas where order_id = ${orderId} for update`;
        if (saga === undefined || saga.step === "DONE") {
          const record = await getIn(tx, orderId);
          if (record === undefined) return { kind: "not_found" };
          return { kind: "terminal", record };
        }
        const decision = plan(saga, saga.in_flight);
        if (decision === "compensate") {
          // A lapsed claim's worker is gone; clearing the token also drops any late result.
          await tx`
            update order_sagas set
              step = ${saga.stock_state === "COMMITTED" ? "VOID" : "RELEASE"},
              attempts = 0, claim_token = null, next_attempt_at = now(),
              cancel_requested = true, cancel_code = 'CUSTOMER_REQUESTED',
              cancel_reason = ${reason}, updated_at = now()
            where order_id = ${orderId}`;
        } else if (decision === "flag") {
          await tx`
            update order_sagas set
              cancel_requested = true, cancel_code = 'CUSTOMER_REQUESTED',
              cancel_reason = ${reason}, updated_at = now()
            where order_id = ${orderId}`;
        }
        return { kind: "planned", plan: decision };
      });
    },

    async claimDue(limit, leaseMs) {
      if (limit <= 0) return [];
      // The claim returns each saga with its order and lines (order columns as o_*, since
      // saga and order share some names): one statement instead of a claim and a read per
      // saga.
      const rows = await sql<(SagaRow & PrefixedOrder & { lines: JsonItem[] })[]>`
        with due as (
          select order_id from order_sagas
          where step <> 'DONE' and next_attempt_at <= now()
          -- A new order's first step runs in PlaceOrder (create), so what is due here is
          -- under way: a retry, a step left for any replica, a lapsed claim.
          order by next_attempt_at
          limit ${limit}
          for update skip locked
        ),
        claimed as (
          update order_sagas s set
            claim_token = gen_random_uuid(),
            attempts = s.attempts + 1,
            next_attempt_at = now() + make_interval(secs => ${seconds(leaseMs)}),
            auth_sent = s.auth_sent or s.step = 'AUTHORIZE',
            commit_sent = s.commit_sent or s.step = 'COMMIT_STOCK',
            updated_at = now()
          from due
          where s.order_id = due.order_id
          returning ${sql.unsafe(
            sagaColumns
              .split(", ")
              .map((c) => `s.${c}`)
              .join(", "),
          )})
        select claimed.*, ${sql.unsafe(prefixedOrderColumns)},
          ${sql.unsafe(linesOf("claimed.order_id"))} as lines
        from claimed left join orders o on o.id = claimed.order_id`;
      return rows.map((row) => {
        const saga = {} as Record<string, unknown>;
        const order = {} as Record<string, unknown>;
        for (const [key, value] of Object.entries(row)) {
          if (key === "lines") continue;
          if (key.startsWith("o_")) order[key.slice(2)] = value;
          else saga[key] = value;
        }
        const found = order.id !== null && order.id !== undefined;
        return {
          saga: saga as unknown as SagaRow,
          record: found
            ? {
                order: order as unknown as OrderRow,
                items: itemsFrom(order.id as string, row.lines),
              }
            : undefined,
        };
      });
    },

    async record(orderId, token, decide, { leaseMs, keepClaim, known, order }) {
      // The common case needs no lock: the worker holds the saga as its claim returned it,
      // and a step that only moves the saga is one conditional UPDATE, written only if no
      // one touched the row since (a customer's cancellation, a lapsed claim). Otherwise,
      // and for anything that also changes the order, the row is locked and re-decided.
      const early = known?.claim_token === token ? decide(known) : undefined;
      if (known !== undefined && early !== undefined) {
        if (early.kind === "next" || early.kind === "retry") {
          const written = await writeStep(sql, orderId, early, { leaseMs, keepClaim }, known);
          if (written !== undefined) return written;
        } else if (order !== undefined) {
          const written = await finishGuarded(known, order, early);
          if (written !== undefined) return written;
        }
      }
      return sql.begin(async (tx): Promise<RecordOutcome> => {
        const [saga] = await tx<SagaRow[]>`
          select ${tx.unsafe(sagaColumns)} from order_sagas where order_id = ${orderId} for update`;
        if (saga === undefined || saga.claim_token !== token || saga.step === "DONE") {
          return { kind: "lost" };
        }
        // Decided once when nothing changed since the claim (decide logs, and a retry's
        // delay is random).
        const transition =
          early !== undefined && known !== undefined && unchangedSince(saga, known)
            ? early
            : decide(saga);
        const changes = transition.changes;
        if (touchesOrder(transition) && changes?.payment_id !== undefined) {
          await tx`
            update orders set payment_id = ${changes.payment_id}, updated_at = now()
            where id = ${orderId} and payment_id is null`;
        }
        switch (transition.kind) {
          case "next":
          case "retry": {
            const written = await writeStep(tx, orderId, transition, { leaseMs, keepClaim });
            return written ?? { kind: "lost" };
          }
          case "confirm":
            return {
              kind: "finished",
              transition: transition.kind,
              record: await finish(tx, saga, "CONFIRMED", changes),
            };
          case "cancel":
            return {
              kind: "finished",
              transition: transition.kind,
              record: await finish(tx, saga, "CANCELLED", changes),
            };
        }
      });
    },

    async getSaga(orderId) {
      const [saga] = await sql<SagaRow[]>`
        select ${sql.unsafe(sagaColumns)} from order_sagas where order_id = ${orderId}`;
      return saga;
    },
  };
}

/** Order lines as the insert takes them (postgres.js takes int8 parameters as strings). */
function itemRows(items: readonly OrderItemRow[]) {
  return items.map((i) => ({
    ...i,
    unit_units: i.unit_units.toString(),
    line_units: i.line_units.toString(),
  }));
}
