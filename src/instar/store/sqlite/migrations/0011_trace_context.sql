-- The trace context (W3C traceparent and tracestate, as JSON) of the code that
-- enqueued each job, when it ran inside an OpenTelemetry span (instar.tracing):
-- the parent of the spans of the job's runs.
ALTER TABLE jobs ADD COLUMN trace_context TEXT;
