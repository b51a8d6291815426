-- Wakes the outbox relay as soon as events commit: one notification per inserting
-- statement (NOTIFY is delivered at commit, and repeats within a transaction collapse),
-- so the relay publishes within milliseconds instead of at its next poll.
create or replace function event_outbox_notify() returns trigger
language plpgsql as $$
begin
  perform pg_notify('event_outbox', '');
  return null;
end
$$;

drop trigger if exists event_outbox_notify on event_outbox;
create trigger event_outbox_notify
  after insert on event_outbox
  for each statement execute function event_outbox_notify();
