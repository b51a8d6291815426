-- Stock per product and the order saga's reservations.

create table stock_levels (
  product_id uuid primary key,
  -- As last set by SetStock; '' until one names it. Lookups by SKU use it.
  sku        text not null default '',
  on_hand    bigint not null,
  reserved   bigint not null default 0,
  updated_at timestamptz not null default now(),
  -- The invariant the API promises (0 <= reserved <= on_hand), held by the database too,
  -- so no code path can ever commit a negative availability.
  constraint on_hand_range check (on_hand >= 0),
  constraint reserved_range check (reserved >= 0 and reserved <= on_hand)
);

-- A SKU names one product at a time; products without one share ''.
create unique index stock_levels_sku on stock_levels (sku) where sku <> '';

-- One reservation per order; the order id is the idempotency key of every reservation RPC.
create table reservations (
  order_id   uuid primary key,
  status     text not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint status_known check (status in ('reserved', 'committed', 'released'))
);

-- The expiry sweeper scans only live reservations, oldest first.
create index reservations_reserved_created on reservations (created_at) where status = 'reserved';

create table reservation_items (
  order_id   uuid not null references reservations (order_id),
  product_id uuid not null references stock_levels (product_id),
  quantity   integer not null,
  primary key (order_id, product_id),
  constraint quantity_range check (quantity between 1 and 1000)
);
