-- The balance check of 001 ran once per inserted entry, at commit: three identical checks
-- for a three-entry posting. It now runs once per statement that inserts entries, over
-- the ledger transactions that statement touched. The rule it enforces is stricter, not
-- looser: every statement must leave the ledger transactions it wrote to balanced, so a
-- posting's entries are inserted in one statement (the store does), and an unbalanced
-- posting still cannot be written, whatever code wrote it.
drop trigger ledger_entries_balanced on ledger_entries;
drop function ledger_check_balanced();

create function ledger_check_balanced() returns trigger language plpgsql as $$
declare
  unbalanced uuid;
begin
  select e.transaction_id into unbalanced
  from ledger_entries e
  where e.transaction_id in (select distinct transaction_id from inserted)
  group by e.transaction_id, e.currency
  having sum(e.debit_minor) <> sum(e.credit_minor)
  limit 1;
  if found then
    raise exception 'ledger transaction % is unbalanced', unbalanced using errcode = '23514';
  end if;
  return null;
end $$;

create trigger ledger_entries_balanced
  after insert on ledger_entries
  referencing new table as inserted
  for each statement execute function ledger_check_balanced();
