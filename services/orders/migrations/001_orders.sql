-- Orders, their lines, and the saga that drives each order to CONFIRMED or CANCELLED.

create table orders (
  id            uuid primary key,
  -- Insertion order: the newest-first listing pages on it (a timestamp can tie).
  seq           bigserial not null unique,
  -- identity's User.id (the access token's subject).
  user_id       text not null,
  -- PlaceOrder's idempotency key, scoped to the user.
  request_id    text not null,
  -- SHA-256 of the ordered items, telling a retry from a request_id reused for other items.
  request_hash  text not null,
  status        text not null check (status in ('PENDING', 'CONFIRMED', 'CANCELLED')),
  -- Every line is in this currency; the total is what payments is asked to charge.
  currency      text not null,
  total_units   bigint not null,
  total_nanos   integer not null,
  -- CancelCode name without its prefix (OUT_OF_STOCK, ...); '' unless CANCELLED.
  cancel_code   text not null default '',
  cancel_reason text not null default '',
  -- payments' Payment.id once authorized.
  payment_id    uuid,
  card_last4    text not null,
  created_at    timestamptz not null default now(),
  updated_at    timestamptz not null default now(),
  unique (user_id, request_id)
);
create index orders_by_user_newest on orders (user_id, seq desc);

-- The lines, with the name, SKU and price catalog had when the order was placed.
create table order_items (
  order_id    uuid not null references orders (id) on delete cascade,
  position    smallint not null,
  product_id  uuid not null,
  sku         text not null,
  name        text not null,
  quantity    integer not null,
  unit_units  bigint not null,
  unit_nanos  integer not null,
  line_units  bigint not null,
  line_nanos  integer not null,
  primary key (order_id, position)
);

-- One saga per order: the step to run next and what the earlier steps left behind, so
-- that any replica can resume it after a crash. Forward steps: RESERVE, AUTHORIZE,
-- COMMIT_STOCK, CAPTURE (then the order is confirmed in the transaction that records the
-- capture). Compensation: RELEASE, VOID, REFUND (then the order is cancelled). DONE: the
-- order is terminal.
create table order_sagas (
  order_id         uuid primary key references orders (id) on delete cascade,
  step             text not null check (step in (
                     'RESERVE', 'AUTHORIZE', 'COMMIT_STOCK', 'CAPTURE',
                     'RELEASE', 'VOID', 'REFUND', 'DONE')),
  -- Attempts of the current step, counting the one in flight.
  attempts         integer not null default 0,
  -- When the step may run next: now for a new step, later after a transient failure, and
  -- the end of the lease while a worker runs it (a crashed worker's claim lapses then).
  next_attempt_at  timestamptz not null default now(),
  -- The claim of the worker running the step; its result is recorded only under it.
  claim_token      uuid,
  -- The customer cancelled while a forward step was in flight; applied when it returns.
  cancel_requested boolean not null default false,
  -- The outcome the compensation ends in (CancelCode name without prefix, reason).
  cancel_code      text not null default '',
  cancel_reason    text not null default '',
  stock_state      text not null default 'NONE'
                     check (stock_state in ('NONE', 'RESERVED', 'COMMITTED', 'RELEASED')),
  payment_state    text not null default 'NONE'
                     check (payment_state in ('NONE', 'AUTHORIZED', 'DECLINED', 'CAPTURED', 'VOIDED', 'REFUNDED')),
  payment_id       uuid,
  -- AuthorizePayment / CommitReservation were sent at least once (their effect may exist
  -- even without a recorded answer).
  auth_sent        boolean not null default false,
  commit_sent      boolean not null default false,
  -- The card, AES-256-GCM under SAGA_CARD_KEY (iv || tag || ciphertext, order id as
  -- associated data); set to null as soon as the authorization has an outcome.
  card_sealed      bytea,
  -- Why the last attempt failed (code and message of the downstream error; never the card).
  last_error       text,
  created_at       timestamptz not null default now(),
  updated_at       timestamptz not null default now()
);
-- What the workers poll: sagas still running, by due time.
create index order_sagas_due on order_sagas (next_attempt_at) where step <> 'DONE';
