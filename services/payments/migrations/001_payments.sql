-- Payments: payment intents, their refunds, the idempotency record of every mutating RPC,
-- and a double-entry ledger. Money is integer minor units of the row's currency (bigint),
-- never a float. No card number is stored anywhere: a payment keeps last4 and brand.

create table payments (
  id              uuid primary key,
  order_id        uuid not null,
  status          text not null check (status in
                    ('authorized', 'captured', 'voided', 'partially_refunded', 'refunded', 'failed')),
  currency        char(3) not null,
  amount_minor    bigint not null check (amount_minor > 0),
  captured_minor  bigint not null default 0,
  refunded_minor  bigint not null default 0,
  card_last4      char(4) not null check (card_last4 ~ '^[0-9]{4}$'),
  card_brand      text not null check (card_brand in ('visa', 'mastercard', 'amex', 'other')),
  -- Set only for status failed; the processor's reason in words goes to failure_reason.
  decline_code    text check (decline_code in
                    ('card_declined', 'insufficient_funds', 'expired_card', 'incorrect_cvc', 'processing_error')),
  failure_reason  text not null default '',
  -- The processor's authorization id (null for a decline): capture, void and refund name it.
  psp_reference   text,
  created_at      timestamptz not null default now(),
  updated_at      timestamptz not null default now(),
  constraint captured_at_most_authorized check (captured_minor between 0 and amount_minor),
  constraint refunded_at_most_captured check (refunded_minor between 0 and captured_minor),
  constraint failed_has_decline check ((status = 'failed') = (decline_code is not null))
);

-- "An order has at most one successful authorization": a second live payment for an order
-- cannot be inserted, even by a racing request under another idempotency key. A voided or
-- declined payment does not count, so an order may be authorized again after them.
create unique index payments_one_live_per_order on payments (order_id)
  where status in ('authorized', 'captured', 'partially_refunded', 'refunded');
create index payments_order on payments (order_id);

create table refunds (
  id             uuid primary key,
  payment_id     uuid not null references payments (id),
  currency       char(3) not null,
  amount_minor   bigint not null check (amount_minor > 0),
  reason         text not null default '',
  psp_reference  text not null,
  created_at     timestamptz not null default now()
);
create index refunds_payment on refunds (payment_id, created_at);

-- One row per (RPC, idempotency key). The row is inserted first, in the transaction that
-- does the work, so a concurrent duplicate waits on the primary key until the first
-- commits (then replays its response) or rolls back (then does the work itself).
-- request_hash is of the canonical request without card number or CVC (see handlers).
create table idempotency_keys (
  operation     text not null check (operation in ('authorize', 'capture', 'void', 'refund')),
  key           text not null,
  request_hash  text not null,
  payment_id    uuid references payments (id),
  -- The RPC's response message (protobuf binary), replayed to a retry.
  response      bytea,
  created_at    timestamptz not null default now(),
  primary key (operation, key)
);

-- The ledger: one transaction per movement of money, each with balanced entries.
--   authorize  debit customer_hold   credit psp_pending     (funds held on the card)
--   void       debit psp_pending     credit customer_hold   (hold released)
--   capture    debit psp_pending     credit customer_hold   (hold consumed)
--              debit psp_receivable  credit revenue         (charged: the processor owes us)
--   refund     debit revenue         credit psp_receivable  (money returned)
-- So per payment: customer_hold's balance is the open hold; revenue's credits minus its
-- debits is the net captured amount.
create table ledger_transactions (
  id          uuid primary key,
  payment_id  uuid not null references payments (id),
  kind        text not null check (kind in ('authorize', 'capture', 'void', 'refund')),
  refund_id   uuid references refunds (id),
  currency    char(3) not null,
  -- Why (a void's reason, a refund's reason).
  memo        text not null default '',
  created_at  timestamptz not null default now()
);
create index ledger_transactions_payment on ledger_transactions (payment_id, created_at);

create table ledger_entries (
  id              bigserial primary key,
  transaction_id  uuid not null references ledger_transactions (id),
  payment_id      uuid not null references payments (id),
  account         text not null check (account in ('customer_hold', 'psp_pending', 'psp_receivable', 'revenue')),
  currency        char(3) not null,
  debit_minor     bigint not null default 0 check (debit_minor >= 0),
  credit_minor    bigint not null default 0 check (credit_minor >= 0),
  created_at      timestamptz not null default now(),
  constraint one_side check ((debit_minor = 0) <> (credit_minor = 0))
);
create index ledger_entries_payment_account on ledger_entries (payment_id, account);
create index ledger_entries_transaction on ledger_entries (transaction_id);

-- Every ledger transaction balances (per currency) when its database transaction commits: checked by a
-- deferred trigger, so entries are inserted one statement at a time but an unbalanced
-- posting can never commit, whatever code wrote it.
create function ledger_check_balanced() returns trigger language plpgsql as $$
begin
  if exists (
    select 1 from ledger_entries where transaction_id = new.transaction_id
    group by currency having sum(debit_minor) <> sum(credit_minor)
  ) then
    raise exception 'ledger transaction % is unbalanced', new.transaction_id
      using errcode = '23514';
  end if;
  return null;
end $$;

create constraint trigger ledger_entries_balanced
  after insert on ledger_entries
  deferrable initially deferred
  for each row execute function ledger_check_balanced();

-- The ledger is append-only: corrections are new, reversing transactions.
create function ledger_append_only() returns trigger language plpgsql as $$
begin
  raise exception 'the ledger is append-only' using errcode = '42501';
end $$;

create trigger ledger_entries_append_only before update or delete on ledger_entries
  for each row execute function ledger_append_only();
create trigger ledger_transactions_append_only before update or delete on ledger_transactions
  for each row execute function ledger_append_only();
