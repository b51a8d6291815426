-- What notifications knows about users: learned from UserSignedUp, so an order's
-- notification can be addressed without calling identity.
create table users (
  user_id uuid primary key,
  email text not null,
  display_name text not null,
  updated_at timestamptz not null default now()
);

-- The log of every notification sent. (source_event_id, kind) is unique: one event yields
-- at most one notification of a kind, even if the inbox were bypassed.
create table notifications (
  id uuid primary key,
  user_id uuid not null,
  kind smallint not null,
  channel smallint not null,
  recipient text not null,
  subject text not null,
  body text not null,
  order_id uuid,
  source_event_id uuid not null,
  created_at timestamptz not null default now(),
  unique (source_event_id, kind)
);

create index notifications_by_user on notifications (user_id, created_at desc, id desc);
create index notifications_by_order on notifications (order_id) where order_id is not null;
