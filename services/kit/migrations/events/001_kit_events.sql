-- The kit's event tables, in every service database that publishes or consumes events.

-- Transactional outbox: rows are written in the same transaction as the change they
-- announce; the relay publishes them to JetStream in seq order and stamps published_at.
create table if not exists event_outbox (
  seq bigserial primary key,
  event_id uuid not null unique,
  subject text not null,
  -- Fully-qualified protobuf type of the payload, e.g. meshmart.orders.v1.OrderPlaced.
  event_type text not null,
  payload bytea not null,
  -- Trace context (traceparent, tracestate) captured when the event was written.
  headers jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  published_at timestamptz
);

create index if not exists event_outbox_unpublished on event_outbox (seq) where published_at is null;

-- Inbox: one row per (consumer, event) handled, written in the same transaction as the
-- handler's effect, so a redelivered event is recognised and skipped.
create table if not exists event_inbox (
  consumer text not null,
  event_id uuid not null,
  processed_at timestamptz not null default now(),
  primary key (consumer, event_id)
);
