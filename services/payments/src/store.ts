import { randomUUID } from "node:crypto";
import {
  beginWithLast,
  type EventNames,
  type LastWrite,
  type OutboundEvent,
  outboxRows,
  type Sql,
} from "@meshmart/kit";
// Type only (erased at runtime): the kit owns the postgres.js dependency.
import type { TransactionSql } from "postgres";
import type { CardBrandName } from "./card.js";
import type { Posting } from "./ledger.js";
import type { DeclineReason } from "./payment-provider.js";

/** A payment's life-cycle state, as stored. */
export type PaymentStatusName =
  | "authorized"
  | "captured"
  | "voided"
  | "partially_refunded"
  | "refunded"
  | "failed";

/** A payment as stored. Money is integer minor units of `currency`. */
export interface PaymentRow {
  id: string;
  order_id: string;
  status: PaymentStatusName;
  currency: string;
  amount_minor: bigint;
  captured_minor: bigint;
  refunded_minor: bigint;
  card_last4: string;
  card_brand: CardBrandName;
  decline_code: DeclineReason | null;
  failure_reason: string;
  psp_reference: string | null;
  created_at: Date;
  updated_at: Date;
}

/** Fields a payment is created with. */
export type NewPayment = Omit<
  PaymentRow,
  "captured_minor" | "refunded_minor" | "created_at" | "updated_at"
>;

/** A refund as stored. */
export interface RefundRow {
  id: string;
  payment_id: string;
  currency: string;
  amount_minor: bigint;
  reason: string;
  psp_reference: string;
  created_at: Date;
}

/** A payment with its refunds, oldest first. */
export interface PaymentRecord {
  payment: PaymentRow;
  refunds: RefundRow[];
}

/** The RPCs whose idempotency keys are recorded; a key is scoped to its RPC. */
export type IdempotentOperation = "authorize" | "capture" | "void" | "refund";

/** An idempotency key and the hash of the canonical request it was first used with. */
export interface IdempotencyClaim {
  operation: IdempotentOperation;
  key: string;
  requestHash: string;
}

/** Outcome of {@link PaymentsStore.idempotent}. */
export type IdempotentOutcome =
  | { kind: "done"; response: Uint8Array }
  | { kind: "replayed"; response: Uint8Array }
  | { kind: "conflict" };

/**
 * What a unit of work may do inside the transaction holding its idempotency key. Reads
 * are sent when called, in call order (so several go out in one write); the writes that
 * return nothing new (a payment's insert and update, a ledger posting) are not waited
 * for at all: they travel with the statement that stores the response, and a failure of
 * any of them fails the transaction.
 */
export interface PaymentsTx {
  /** Serializes authorizations of one order until the transaction ends. */
  lockOrder(orderId: string): Promise<void>;
  /** The order's payment that counts as its successful authorization, if any. */
  livePaymentOfOrder(orderId: string): Promise<PaymentRow | undefined>;
  /** The payment as it will be stored (its timestamps are this process's clock). */
  insertPayment(payment: NewPayment): PaymentRow;
  /** Reads and row-locks a payment, so concurrent transitions of it run one at a time. */
  lockPayment(id: string): Promise<PaymentRow | undefined>;
  /** The locked `row` with `change` applied, as it will be stored. */
  updatePayment(
    row: PaymentRow,
    change: Pick<PaymentRow, "status" | "captured_minor" | "refunded_minor">,
  ): PaymentRow;
  insertRefund(refund: Omit<RefundRow, "created_at">): Promise<RefundRow>;
  refundsOf(paymentId: string): Promise<RefundRow[]>;
  /** Writes one balanced ledger transaction for the payment. */
  post(paymentId: string, posting: Posting): void;
  /**
   * Events for the outbox, committed with everything else: written by `idempotent` in the
   * statement that stores the response, so they cost no statement of their own.
   */
  publish(events: readonly OutboundEvent[]): Promise<void>;
}

/** Net money captured for an order, from the ledger's revenue account. */
export interface NetCaptured {
  order_id: string;
  currency: string;
  /** Payments of the order (any status, declines included). */
  payments: number;
  captured_minor: bigint;
  refunded_minor: bigint;
  /** captured - refunded: the authorized amount for a confirmed order, 0 for a cancelled one. */
  net_minor: bigint;
}

/** Totals of one ledger account (all payments, or one). */
export interface AccountBalance {
  account: string;
  currency: string;
  debit_minor: bigint;
  credit_minor: bigint;
}

/** A ledger transaction whose debits and credits differ (there should never be one). */
export interface Imbalance {
  transaction_id: string;
  currency: string;
  debit_minor: bigint;
  credit_minor: bigint;
}

/** Every SQL statement payments runs. */
export interface PaymentsStore {
  /**
   * Runs `work` once per (operation, key), in one transaction that first claims the key.
   * A duplicate arriving meanwhile waits for that transaction: when it commits, the
   * duplicate gets the stored response ("replayed", or "conflict" when its request hash
   * differs); when it fails, the claim goes with it and the duplicate does the work.
   * `read` runs right behind the claim, in the same round trip (locks and reads only: it
   * also runs for a duplicate, whose transaction then ends without writing); `work` gets
   * what it read, and runs only for the key's first use.
   */
  idempotent<R>(
    claim: IdempotencyClaim,
    read: (tx: PaymentsTx) => Promise<R>,
    work: (tx: PaymentsTx, read: R) => Promise<{ response: Uint8Array; paymentId: string }>,
  ): Promise<IdempotentOutcome>;
  getPayment(id: string): Promise<PaymentRecord | undefined>;
  /**
   * Per order (all orders, or those given): captured, refunded and net amount, summed from
   * the ledger. The system's invariant: a confirmed order nets its amount, a cancelled one 0.
   */
  netCapturedByOrder(orderIds?: readonly string[]): Promise<NetCaptured[]>;
  /** Debit and credit totals per account, for one payment or the whole ledger. */
  accountBalances(paymentId?: string): Promise<AccountBalance[]>;
  /** Ledger transactions that do not balance; empty unless the ledger is corrupt. */
  ledgerImbalances(): Promise<Imbalance[]>;
}

const paymentColumns =
  "id, order_id, status, currency, amount_minor, captured_minor, refunded_minor, card_last4, card_brand, decline_code, failure_reason, psp_reference, created_at, updated_at";
const refundColumns = "id, payment_id, currency, amount_minor, reason, psp_reference, created_at";

/** Statuses under which a payment is an order's (one) successful authorization. */
const LIVE_STATUSES = ["authorized", "captured", "partially_refunded", "refunded"];

/**
 * Advisory-lock class for per-order locks (two-int form, its own key space, so it never
 * meets the kit's single-bigint migration lock): "pay" in ASCII.
 */
const ORDER_LOCK_CLASS = 0x706179;

/** The store over payments' own database; `names` places its events in the outbox. */
export function createPaymentsStore(sql: Sql, names: EventNames): PaymentsStore {
  return {
    async idempotent(claim, read, work) {
      // The work's writes and the statement storing the response travel with the COMMIT
      // (beginWithLast): one round trip for all of them.
      return beginWithLast(sql, async (tx, last): Promise<IdempotentOutcome> => {
        const claiming = tx`
          insert into idempotency_keys (operation, key, request_hash)
          values (${claim.operation}, ${claim.key}, ${claim.requestHash})
          on conflict (operation, key) do nothing
          returning key`.execute();
        const events: OutboundEvent[] = [];
        const ops = txOps(tx, events, last);
        const reading = read(ops);
        // Settled below on both paths; a duplicate does not need what was read.
        reading.catch(() => {});
        const claimed = await claiming;
        if (claimed.length === 0) {
          // The conflicting row committed (the insert waited for it), so this sees it.
          const [earlier] = await tx<{ request_hash: string; response: Buffer | null }[]>`
            select request_hash, response from idempotency_keys
            where operation = ${claim.operation} and key = ${claim.key}`;
          if (earlier === undefined || earlier.response === null) {
            throw new Error("idempotency record vanished or has no response");
          }
          if (earlier.request_hash !== claim.requestHash) return { kind: "conflict" };
          return { kind: "replayed", response: new Uint8Array(earlier.response) };
        }
        const { response, paymentId } = await work(ops, await reading);
        const rows = outboxRows(names, events);
        last(
          tx`
          with e as (
            ${rows.length === 0 ? tx`select` : tx`insert into event_outbox ${tx(rows, "event_id", "subject", "event_type", "payload", "headers")} on conflict (event_id) do nothing`})
          update idempotency_keys set response = ${Buffer.from(response)}, payment_id = ${paymentId}
          where operation = ${claim.operation} and key = ${claim.key}`.execute(),
        );
        return { kind: "done", response };
      });
    },

    async getPayment(id) {
      const [payment] = await sql<PaymentRow[]>`
        select ${sql.unsafe(paymentColumns)} from payments where id = ${id}`;
      if (payment === undefined) return undefined;
      return { payment, refunds: await selectRefunds(sql, id) };
    },

    async netCapturedByOrder(orderIds) {
      const filter =
        orderIds === undefined ? sql`` : sql`where p.order_id = any (${orderIds}::uuid[])`;
      const rows = await sql<
        {
          order_id: string;
          currency: string;
          payments: bigint;
          captured_minor: bigint;
          refunded_minor: bigint;
        }[]
      >`
        select p.order_id, p.currency,
               count(distinct p.id) as payments,
               coalesce(sum(e.credit_minor), 0)::bigint as captured_minor,
               coalesce(sum(e.debit_minor), 0)::bigint as refunded_minor
        from payments p
        left join ledger_entries e on e.payment_id = p.id and e.account = 'revenue'
        ${filter}
        group by p.order_id, p.currency
        order by p.order_id, p.currency`;
      return rows.map((r) => ({
        order_id: r.order_id,
        currency: r.currency,
        payments: Number(r.payments),
        captured_minor: r.captured_minor,
        refunded_minor: r.refunded_minor,
        net_minor: r.captured_minor - r.refunded_minor,
      }));
    },

    async accountBalances(paymentId) {
      const filter = paymentId === undefined ? sql`` : sql`where payment_id = ${paymentId}`;
      const rows = await sql<AccountBalance[]>`
        select account, currency,
               sum(debit_minor)::bigint as debit_minor, sum(credit_minor)::bigint as credit_minor
        from ledger_entries ${filter}
        group by account, currency
        order by account, currency`;
      return [...rows];
    },

    async ledgerImbalances() {
      const rows = await sql<Imbalance[]>`
        select transaction_id, currency,
               sum(debit_minor)::bigint as debit_minor, sum(credit_minor)::bigint as credit_minor
        from ledger_entries
        group by transaction_id, currency
        having sum(debit_minor) <> sum(credit_minor)`;
      return [...rows];
    },
  };
}

function txOps(tx: TransactionSql, events: OutboundEvent[], last: LastWrite): PaymentsTx {
  return {
    lockOrder(orderId) {
      return tx`select pg_advisory_xact_lock(${ORDER_LOCK_CLASS}::int, hashtext(${orderId}))`
        .execute()
        .then(() => undefined);
    },

    livePaymentOfOrder(orderId) {
      return tx<PaymentRow[]>`
        select ${tx.unsafe(paymentColumns)} from payments
        where order_id = ${orderId} and status = any (${LIVE_STATUSES}::text[])`
        .execute()
        .then(([row]) => row);
    },

    insertPayment(p) {
      const now = new Date();
      last(
        tx`
        insert into payments (id, order_id, status, currency, amount_minor, card_last4, card_brand,
                              decline_code, failure_reason, psp_reference, created_at, updated_at)
        values (${p.id}, ${p.order_id}, ${p.status}, ${p.currency}, ${p.amount_minor.toString()}, ${p.card_last4},
                ${p.card_brand}, ${p.decline_code}, ${p.failure_reason}, ${p.psp_reference}, ${now}, ${now})`.execute(),
      );
      return { ...p, captured_minor: 0n, refunded_minor: 0n, created_at: now, updated_at: now };
    },

    lockPayment(id) {
      return tx<PaymentRow[]>`
        select ${tx.unsafe(paymentColumns)} from payments where id = ${id} for update`
        .execute()
        .then(([row]) => row);
    },

    updatePayment(row, change) {
      const now = new Date();
      // The row is locked by this transaction, so the update cannot miss it.
      last(
        tx`
        update payments
        set status = ${change.status}, captured_minor = ${change.captured_minor.toString()},
            refunded_minor = ${change.refunded_minor.toString()}, updated_at = ${now}
        where id = ${row.id}`.execute(),
      );
      return { ...row, ...change, updated_at: now };
    },

    async insertRefund(r) {
      const [row] = await tx<RefundRow[]>`
        insert into refunds (id, payment_id, currency, amount_minor, reason, psp_reference)
        values (${r.id}, ${r.payment_id}, ${r.currency}, ${r.amount_minor.toString()}, ${r.reason}, ${r.psp_reference})
        returning ${tx.unsafe(refundColumns)}`;
      if (row === undefined) throw new Error("insert returned no refund");
      return row;
    },

    refundsOf(paymentId) {
      return selectRefunds(tx, paymentId);
    },

    post(paymentId, posting) {
      // The ledger transaction and its entries in one statement: the database checks the
      // balance once per statement (migration 002), and one round trip instead of two.
      const transactionId = randomUUID();
      const entries = posting.entries.map((e) => ({
        transaction_id: transactionId,
        payment_id: paymentId,
        account: e.account,
        currency: posting.currency,
        // postgres.js's types take int8 parameters as strings; the column makes them bigint.
        debit_minor: e.debitMinor.toString(),
        credit_minor: e.creditMinor.toString(),
      }));
      last(
        tx`
        with t as (
          insert into ledger_transactions (id, payment_id, kind, refund_id, currency, memo)
          values (${transactionId}, ${paymentId}, ${posting.kind}, ${posting.refundId ?? null},
                  ${posting.currency}, ${posting.memo}))
        insert into ledger_entries ${tx(entries, "transaction_id", "payment_id", "account", "currency", "debit_minor", "credit_minor")}`.execute(),
      );
    },

    async publish(more) {
      events.push(...more);
    },
  };
}

async function selectRefunds(sql: Sql | TransactionSql, paymentId: string): Promise<RefundRow[]> {
  const rows = await sql<RefundRow[]>`
    select ${sql.unsafe(refundColumns)} from refunds
    where payment_id = ${paymentId} order by created_at, id`;
  return [...rows];
}
