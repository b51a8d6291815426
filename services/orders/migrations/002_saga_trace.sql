-- The W3C trace context (traceparent, tracestate) of the PlaceOrder call that started the
-- saga. The worker runs each step later, in whichever replica claims it, as a span of that
-- trace, so one order is one trace from the edge to the last compensation. Null for sagas
-- started before this column or without a trace.
alter table order_sagas add column trace_context jsonb;
