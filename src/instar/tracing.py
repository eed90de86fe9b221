"""OpenTelemetry tracing, when ``opentelemetry-api`` is installed (the
``tracing`` extra); without it this module imports nothing and does nothing.

- Enqueue: the trace context of the code that enqueues (its current span, as
  W3C ``traceparent``/``tracestate`` fields; never the baggage, which is user
  data) is stored with the job (``carrier``), at most ``MAX_CARRIER_BYTES``.
- Run: each run is a span, ``instar.run <job name>`` (kind consumer), whose
  parent is the enqueuing span, with the job's id, name, attempt and queue as
  attributes; the handler runs inside it (a span the handler starts is its
  child), and the run's transitions (its claim, its end) are its events. A
  run that failed, or whose worker lost its lease, has an error status. The
  span ends once the worker has written the run's end.

A worker makes spans only when the application configured a tracer provider
(``opentelemetry.trace.set_tracer_provider``), looked for once a second while
there is none (a provider set after the worker started is used within a
second); otherwise tracing costs a clock read per run. A stored context that
is not what Instar wrote (edited in the database) is ignored: the run's span
is then a root.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

from instar.lifecycle import CLAIM, State
from instar.models import Job
from instar.store.contract import Move

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the tracing extra is not installed
    trace = None  # type: ignore[assignment]
else:
    W3C = TraceContextTextMapPropagator()

log = logging.getLogger("instar.tracing")

MAX_CARRIER_BYTES = 1024
"""The largest trace context stored with a job (a traceparent is 55 bytes; the
rest is room for a tracestate, which W3C caps at 512 characters)."""


def carrier() -> str | None:
    """The current trace context as JSON text, or None (no valid span now, or
    no OpenTelemetry)."""
    if trace is None or not trace.get_current_span().get_span_context().is_valid:
        return None
    fields: dict[str, str] = {}
    W3C.inject(fields)  # traceparent and tracestate: never the baggage, user data
    text = json.dumps(fields, separators=(",", ":"))
    return text if fields and len(text) <= MAX_CARRIER_BYTES else None


def _parent(text: str | None) -> Any:
    """The context a stored carrier describes; an empty one (a root span) for
    none, or for text Instar did not write (not JSON, nested past the parser's
    depth, not a mapping of strings)."""
    root = otel_context.Context()
    if not text or len(text) > MAX_CARRIER_BYTES:
        return root
    try:
        fields = json.loads(text)
    except (ValueError, RecursionError):
        return root
    if not isinstance(fields, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in fields.items()
    ):
        return root
    return W3C.extract(fields, context=root)


class RunTracing:
    """The spans of one worker's runs: started when a run starts, given its
    ending moves when the run ends, and ended when the worker has written them
    (or found it could not: the lease was lost)."""

    LOOK_AGAIN = 1.0
    """Seconds between looks for a tracer provider while none is configured: an
    application may set one after its worker started (once set, it stays)."""

    def __init__(self) -> None:
        self._tracer: Any = None
        self._look_again = 0.0  # time.monotonic() of the next look for a provider
        self._ending: dict[int, Any] = {}  # job id: span whose moves wait to be written

    def start(self, job: Job) -> Any:
        """A started span for this run of ``job``, or None when no tracer
        provider is configured (or OpenTelemetry failed: a run never does)."""
        if trace is None:
            return None
        try:
            return self._start(job)
        except Exception:
            log.exception("job %d: no span for this run", job.id)
            return None

    def _start(self, job: Job) -> Any:
        if self._tracer is None:
            # Without a provider a run costs this check (the lookup reads the
            # environment: ~2.5 µs, so at most once every LOOK_AGAIN seconds).
            now = time.monotonic()
            if now < self._look_again:
                return None
            provider = trace.get_tracer_provider()
            if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
                self._look_again = now + self.LOOK_AGAIN
                return None
            self._tracer = trace.get_tracer("instar")
        span = self._tracer.start_span(
            f"instar.run {job.name}",
            context=_parent(job.trace_context),
            kind=SpanKind.CONSUMER,
            attributes={
                "instar.job.id": job.id,
                "instar.job.name": job.name,
                "instar.job.attempt": job.attempt,
                "instar.job.queue": job.queue,
            },
        )
        span.add_event(_transition(*CLAIM), {"instar.trigger": "claimed"})
        return span

    def inside(self, span: Any) -> contextlib.AbstractContextManager[None]:
        """Run the block with ``span`` current (in this thread or task)."""
        return _NOTHING if span is None else _current(span)

    def ending(self, span: Any, moves: Sequence[Move], error: BaseException | None) -> None:
        """The run is over: its moves are queued for the next batch."""
        if span is None or not moves:
            return
        for move in moves:
            span.add_event(
                _transition(move.from_state, move.to_state), {"instar.trigger": move.trigger}
            )
        if error is not None:  # the handler raised: whatever the retry policy made of it
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:500]))
        self._ending[moves[0].job_id] = span

    def written(self, job_id: int, *, refused: bool = False) -> None:
        """The batch wrote the run's moves (or refused them: the lease was lost)."""
        span = self._ending.pop(job_id, None)
        if span is None:
            return
        if refused:
            self.lost(span)
        else:
            span.end()

    def lost(self, span: Any) -> None:
        """End a run whose worker lost its lease: nothing it did was written."""
        if span is None:
            return
        span.add_event("lease lost")
        span.set_status(Status(StatusCode.ERROR, "this worker lost the job's lease"))
        span.end()

    def close(self) -> None:
        """End the spans whose moves were never written (the worker stops)."""
        for span in self._ending.values():
            span.add_event("not written: the worker stopped")
            span.end()
        self._ending.clear()


_NOTHING = contextlib.nullcontext()


@contextlib.contextmanager
def _current(span: Any) -> Iterator[None]:
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        otel_context.detach(token)


def _transition(left: State, entered: State) -> str:
    return f"{left.value} -> {entered.value}"
