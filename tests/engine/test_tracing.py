"""OpenTelemetry: the trace context of the code that enqueues travels with the
job, and each run is a span under it, with the run's transitions as events."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import instar
from instar.tracing import MAX_CARRIER_BYTES
from tests.conftest import execute_raw

EXPORTER = InMemorySpanExporter()
ROOT = Path(__file__).resolve().parents[2]


class _WhileRecording(SimpleSpanProcessor):
    """Exports only while a test of this module records: the tests after it run
    their workers under the same provider (a process sets it once)."""

    recording = False

    def on_end(self, span: ReadableSpan) -> None:
        if self.recording:
            super().on_end(span)


PROCESSOR = _WhileRecording(EXPORTER)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The spans this test ends."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(PROCESSOR)
        trace.set_tracer_provider(provider)
    EXPORTER.clear()
    PROCESSOR.recording = True
    yield EXPORTER
    PROCESSOR.recording = False
    EXPORTER.clear()


def _by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


def test_a_run_is_a_span_under_the_span_that_enqueued_it(
    database: str, spans: InMemorySpanExporter
) -> None:
    with instar.App(database) as app:

        @app.job(name="ship")
        def ship(order: int) -> int:
            with trace.get_tracer("shop").start_as_current_span("label"):
                return order

        with trace.get_tracer("shop").start_as_current_span("checkout"):
            job = app.enqueue("ship", {"order": 7})
        app.run_worker(burst=True)
        found = _by_name(spans)
        checkout, run, label = found["checkout"], found["instar.run ship"], found["label"]
        assert run.context.trace_id == checkout.context.trace_id
        assert run.parent is not None and run.parent.span_id == checkout.context.span_id
        assert label.parent is not None and label.parent.span_id == run.context.span_id
        assert dict(run.attributes or {}) == {
            "instar.job.id": job.id,
            "instar.job.name": "ship",
            "instar.job.attempt": 1,
            "instar.job.queue": "default",
        }
        assert [e.name for e in run.events] == ["ready -> running", "running -> completed"]


def test_each_attempt_is_a_span_and_a_failed_one_has_an_error_status(
    database: str, spans: InMemorySpanExporter
) -> None:
    with instar.App(database) as app:

        @app.job(name="flaky", retry=instar.Retry(max_attempts=2, initial_interval=0, jitter=0))
        async def flaky(ctx: instar.Context) -> str:
            with trace.get_tracer("shop").start_as_current_span(f"try {ctx.attempt}"):
                if ctx.attempt == 1:
                    raise RuntimeError("card declined")
            return "charged"

        with trace.get_tracer("shop").start_as_current_span("order"):
            app.enqueue("flaky")
        app.run_worker(burst=True)
        runs = [s for s in spans.get_finished_spans() if s.name == "instar.run flaky"]
        order = _by_name(spans)["order"]
        assert [(r.attributes or {})["instar.job.attempt"] for r in runs] == [1, 2]
        assert {r.parent.span_id for r in runs if r.parent} == {order.context.span_id}
        assert [r.status.status_code.name for r in runs] == ["ERROR", "UNSET"]
        assert "card declined" in (runs[0].status.description or "")
        assert [e.name for e in runs[0].events] == [
            "ready -> running",
            "running -> backing-off",
            "exception",
        ]
        tries = _by_name(spans)
        assert tries["try 2"].parent is not None
        assert tries["try 2"].parent.span_id == runs[1].context.span_id


def test_a_job_enqueued_outside_any_span_runs_as_a_root_span(
    database: str, spans: InMemorySpanExporter
) -> None:
    with instar.App(database) as app:

        @app.job(name="tidy")
        def tidy() -> None:
            return None

        job = app.enqueue("tidy")
        assert app.get(job.id).trace_context is None
        app.run_worker(burst=True)
        [run] = spans.get_finished_spans()
        assert run.parent is None


def test_a_stored_trace_context_that_is_not_instars_is_ignored(
    database: str, spans: InMemorySpanExporter
) -> None:
    with instar.App(database) as app:

        @app.job(name="tidy")
        def tidy() -> None:
            return None

        jobs = [app.enqueue("tidy") for _ in range(3)]
        for job, text in zip(
            jobs, ["not json", '{"traceparent": 5}', "x" * MAX_CARRIER_BYTES], strict=True
        ):
            execute_raw(database, "UPDATE jobs SET trace_context = ? WHERE id = ?", (text, job.id))
        report = app.run_worker(burst=True)
        assert report.completed == 3
        assert [s.parent for s in spans.get_finished_spans()] == [None, None, None]


def test_without_opentelemetry_jobs_run_and_nothing_of_it_is_imported(tmp_path: Path) -> None:
    script = f"""
import sys

class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "opentelemetry":
            raise ImportError(name)

sys.meta_path.insert(0, Absent())
import instar

app = instar.App("sqlite:///{tmp_path / "jobs.db"}")

@app.job(name="tidy")
def tidy() -> str:
    return "tidied"

job = app.enqueue("tidy")
app.run_worker(burst=True)
assert app.get(job.id).result == "tidied"
assert not [m for m in sys.modules if m.startswith("opentelemetry")]
print("ok")
"""
    ran = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "ok"


def test_a_run_without_a_stored_context_is_a_root_even_inside_a_span_of_the_worker(
    database: str, spans: InMemorySpanExporter
) -> None:
    with instar.App(database) as app:

        @app.job(name="tidy")
        def tidy() -> None:
            return None

        plain = app.enqueue("tidy")
        deep = app.enqueue("tidy")
        execute_raw(
            database, "UPDATE jobs SET trace_context = ? WHERE id = ?", ("[" * 100_000, deep.id)
        )
        with trace.get_tracer("ops").start_as_current_span("worker process"):
            report = app.run_worker(burst=True)
        assert report.completed == 2
        assert app.get(plain.id).state is app.get(deep.id).state is instar.State.COMPLETED
        runs = [s for s in spans.get_finished_spans() if s.name == "instar.run tidy"]
        assert [s.parent for s in runs] == [None, None]


def test_the_stored_context_never_carries_baggage(database: str) -> None:
    with instar.App(database) as app:

        @app.job(name="tidy")
        def tidy() -> None:
            return None

        with trace.get_tracer("shop").start_as_current_span("checkout"):
            token = otel_context.attach(baggage.set_baggage("user.email", "alice@example.com"))
            try:
                job = app.enqueue("tidy")
            finally:
                otel_context.detach(token)
        stored = app.get(job.id).trace_context
        assert stored is not None and "traceparent" in stored
        assert "alice" not in stored and "baggage" not in stored


def test_a_run_whose_worker_lost_the_lease_ends_its_span_with_an_error(
    database: str, spans: InMemorySpanExporter
) -> None:
    with instar.App(database) as app:

        @app.job(name="stolen")
        def stolen(ctx: instar.Context) -> None:
            execute_raw(
                database, "UPDATE jobs SET lease_token = 'someone else' WHERE id = ?", (ctx.job_id,)
            )
            ctx.step("after the theft", lambda: 1)

        app.enqueue("stolen")
        app.run_worker(burst=True)
        [run] = [s for s in spans.get_finished_spans() if s.name == "instar.run stolen"]
        assert run.status.status_code.name == "ERROR"
        assert [e.name for e in run.events][-1] == "lease lost"
