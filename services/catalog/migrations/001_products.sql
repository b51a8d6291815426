-- Products and the idempotency record of CreateProduct.
-- pg_trgm is a trusted extension (PG 13+): the database owner may create it, no superuser.
create extension if not exists pg_trgm;

create table products (
  id             uuid primary key,
  sku            text not null unique,
  name           text not null,
  description    text not null default '',
  category       text not null,
  image_url      text not null default '',
  price_currency char(3) not null,
  price_units    bigint not null,
  price_nanos    integer not null,
  -- Bumped on every change; the cache compares it so a slow reader never overwrites newer data.
  version        bigint not null default 1,
  created_at     timestamptz not null default now(),
  updated_at     timestamptz not null default now(),
  search         tsvector generated always as (
                   setweight(to_tsvector('simple', name), 'A') ||
                   setweight(to_tsvector('simple', description), 'B') ||
                   setweight(to_tsvector('simple', category), 'C')
                 ) stored,
  constraint price_nanos_range check (price_nanos between -999999999 and 999999999),
  constraint price_sign check (
    (price_units >= 0 and price_nanos >= 0) or (price_units <= 0 and price_nanos <= 0)
  )
);

-- Keyset pagination walks (name, id); with a category filter, (category, name, id).
create index products_name_id on products (name, id);
create index products_category_name_id on products (category, name, id);
create index products_search on products using gin (search);
create index products_name_trgm on products using gin (name gin_trgm_ops);

-- One row per CreateProduct request_id: a retry returns the product the first attempt made.
create table create_product_requests (
  request_id   text primary key,
  request_hash text not null,
  product_id   uuid not null,
  created_at   timestamptz not null default now()
);
