import { randomUUID } from "node:crypto";
import { fromBinary } from "@bufbuild/protobuf";
import { type CallOptions, type Client, createClient } from "@connectrpc/connect";
import { createEventNames, type Sql } from "@meshmart/kit";
import type { Card } from "@meshmart/kit/gen/meshmart/common/v1/card_pb.js";
import * as events from "@meshmart/kit/gen/meshmart/payments/v1/events_pb.js";
import { PaymentService } from "@meshmart/kit/gen/meshmart/payments/v1/payments_service_pb.js";
import {
  bearer,
  createTestIssuer,
  createTestTransport,
  type LogSink,
  openServiceTestDatabase,
  type TestDatabase,
  type TestIssuer,
} from "@meshmart/kit/testing";
import { createFakePaymentProvider, TEST_CARDS } from "../../src/fake-payment-provider.js";
import { type PaymentProvider, ProviderUnavailableError } from "../../src/payment-provider.js";
import type { CallerPolicy } from "../../src/peer.js";
import { createPaymentsRoutes } from "../../src/routes.js";
import { migrationsDir } from "../../src/server.js";
import { createPaymentsStore, type PaymentsStore } from "../../src/store.js";

export { TEST_CARDS };

/**
 * The fake PSP with a call counter and an outage switch: tests prove a retry never reaches
 * the card again, and that an unreachable processor leaves nothing behind.
 */
export interface ObservedProvider extends PaymentProvider {
  calls: { authorize: number; capture: number; void: number; refund: number };
  /** While true, every call fails as "processor unreachable". */
  down: boolean;
}

export function observedProvider(
  inner: PaymentProvider = createFakePaymentProvider(),
): ObservedProvider {
  const p: ObservedProvider = {
    calls: { authorize: 0, capture: 0, void: 0, refund: 0 },
    down: false,
    async authorize(input) {
      p.calls.authorize++;
      if (p.down) throw new ProviderUnavailableError("processor unreachable (test)");
      return inner.authorize(input);
    },
    async capture(input) {
      p.calls.capture++;
      if (p.down) throw new ProviderUnavailableError("processor unreachable (test)");
      return inner.capture(input);
    },
    async void(input) {
      p.calls.void++;
      if (p.down) throw new ProviderUnavailableError("processor unreachable (test)");
      return inner.void(input);
    },
    async refund(input) {
      p.calls.refund++;
      if (p.down) throw new ProviderUnavailableError("processor unreachable (test)");
      return inner.refund(input);
    },
  };
  return p;
}

/**
 * Payments' handlers wired as `startPayments` wires them, served in memory through the
 * production interceptor chain, over a fresh database.
 */
export interface PaymentsFixture {
  client: Client<typeof PaymentService>;
  sql: Sql;
  store: PaymentsStore;
  provider: ObservedProvider;
  db: TestDatabase;
  /** The service's own log lines (handlers, store, SQL notices). */
  logs: LogSink;
  /** The interceptors' lines (access log, masked errors). */
  rpcLogs: LogSink;
  issuer: TestIssuer;
  admin: CallOptions;
  customer: CallOptions;
  close(): Promise<void>;
}

export async function createPaymentsFixture(
  label: string,
  policy: CallerPolicy = { peerIdentity: "off", refundServiceAccounts: ["orders"] },
): Promise<PaymentsFixture> {
  const [{ db, sql, logger, logs, close }, issuer] = await Promise.all([
    openServiceTestDatabase({ label, service: "payments", migrations: migrationsDir }),
    createTestIssuer(),
  ]);
  const store = createPaymentsStore(sql, createEventNames());
  const provider = observedProvider();
  const { transport, logs: rpcLogs } = createTestTransport(
    createPaymentsRoutes({ store, provider, policy, logger }),
    { verifier: issuer.verifier },
  );
  const [admin, customer] = await Promise.all([
    bearer(issuer, ["admin"]),
    bearer(issuer, ["customer"]),
  ]);
  return {
    client: createClient(PaymentService, transport),
    sql,
    store,
    provider,
    db,
    logs,
    rpcLogs,
    issuer,
    admin,
    customer,
    close,
  };
}

/** A card with a future expiry. */
export function card(number: string = TEST_CARDS.approved, overrides: Partial<Card> = {}) {
  return {
    number,
    expMonth: 12,
    expYear: new Date().getUTCFullYear() + 3,
    cvc: "123",
    holderName: "Ann Example",
    ...overrides,
  };
}

/** Fields of an AuthorizePaymentRequest. */
export interface AuthorizeFields {
  idempotencyKey: string;
  orderId: string;
  amount: { currencyCode: string; units: bigint; nanos: number };
  card: ReturnType<typeof card>;
}

/** An AuthorizePaymentRequest for a fresh order: 25.00 EUR on the approved test card. */
export function authorizeRequest(overrides: Partial<AuthorizeFields> = {}): AuthorizeFields {
  const orderId = overrides.orderId ?? randomUUID();
  return {
    idempotencyKey: `${orderId}:authorize`,
    orderId,
    amount: { currencyCode: "EUR", units: 25n, nanos: 0 },
    card: card(),
    ...overrides,
  };
}

const eventSchemas = [
  events.PaymentAuthorizedSchema,
  events.PaymentCapturedSchema,
  events.PaymentVoidedSchema,
  events.PaymentRefundedSchema,
  events.PaymentFailedSchema,
];

/** The outbox's events about one payment, decoded, oldest first. */
export async function outboxEvents(
  sql: Sql,
  paymentId: string,
): Promise<{ type: string; message: { paymentId: string } & Record<string, unknown> }[]> {
  const rows = await sql<{ event_type: string; payload: Buffer }[]>`
    select event_type, payload from event_outbox order by seq`;
  return rows
    .map((r) => {
      const schema = eventSchemas.find((s) => s.typeName === r.event_type);
      if (schema === undefined) throw new Error(`unexpected event ${r.event_type}`);
      const message = fromBinary(schema, r.payload) as unknown as {
        paymentId: string;
      } & Record<string, unknown>;
      return { type: r.event_type.split(".").at(-1) ?? "", message };
    })
    .filter((e) => e.message.paymentId === paymentId);
}

/** Ledger transactions of a payment with their entries, oldest first. */
export async function ledgerOf(
  sql: Sql,
  paymentId: string,
): Promise<{ kind: string; memo: string; entries: string[] }[]> {
  const rows = await sql<
    {
      id: string;
      kind: string;
      memo: string;
      account: string;
      debit_minor: bigint;
      credit_minor: bigint;
    }[]
  >`
    select t.id, t.kind, t.memo, e.account, e.debit_minor, e.credit_minor
    from ledger_transactions t join ledger_entries e on e.transaction_id = t.id
    where t.payment_id = ${paymentId}
    order by t.created_at, t.id, e.id`;
  const byTx = new Map<string, { kind: string; memo: string; entries: string[] }>();
  for (const r of rows) {
    let t = byTx.get(r.id);
    if (t === undefined) {
      t = { kind: r.kind, memo: r.memo, entries: [] };
      byTx.set(r.id, t);
    }
    t.entries.push(
      r.debit_minor > 0n ? `Dr ${r.account} ${r.debit_minor}` : `Cr ${r.account} ${r.credit_minor}`,
    );
  }
  return [...byTx.values()];
}

/** How many rows a table has for a payment (or in all, without one). */
export async function countRows(
  sql: Sql,
  table: string,
  where: { column: string; value: string },
): Promise<number> {
  const [row] = await sql<{ n: bigint }[]>`
    select count(*) as n from ${sql(table)} where ${sql(where.column)} = ${where.value}`;
  return Number(row?.n ?? 0n);
}

/**
 * Every value of every text-like or binary column in the database's public schema that
 * contains `needle` (as text, or as bytes inside binary columns): `table.column` names.
 */
export async function columnsContaining(sql: Sql, needle: string): Promise<string[]> {
  const columns = await sql<{ table_name: string; column_name: string; data_type: string }[]>`
    select c.table_name, c.column_name, c.data_type
    from information_schema.columns c
    join information_schema.tables t on t.table_schema = c.table_schema and t.table_name = c.table_name
    where c.table_schema = 'public' and t.table_type = 'BASE TABLE'
      and c.data_type in ('text', 'character varying', 'character', 'bytea', 'jsonb', 'json')`;
  const hits: string[] = [];
  for (const c of columns) {
    const value =
      c.data_type === "bytea"
        ? sql`position(convert_to(${needle}, 'UTF8') in ${sql(c.column_name)}) > 0`
        : sql`${sql(c.column_name)}::text like ${`%${needle}%`}`;
    const [row] = await sql<{ n: bigint }[]>`
      select count(*) as n from ${sql(c.table_name)} where ${value}`;
    if (Number(row?.n ?? 0n) > 0) hits.push(`${c.table_name}.${c.column_name}`);
  }
  return hits;
}

export { rejection, violationsOf } from "@meshmart/kit/testing";
