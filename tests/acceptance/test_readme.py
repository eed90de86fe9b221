"""The README says what the code does."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import tomllib
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

import instar
from instar.clock import FrozenClock
from instar.diagram import render
from instar.machines import InvalidMachine
from instar.vocabulary import Actor, AwakeableState, DependencyKind, Trigger
from tests.conftest import POSTGRES, _postgres_or_skip

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
PYPROJECT = (ROOT / "pyproject.toml").read_text()


def test_the_readme_lifecycle_diagram_is_drawn_from_the_table() -> None:
    block = re.search(r"```mermaid\n(.*?)```", README, re.S)
    assert block is not None
    assert block.group(1).strip() == render("mermaid").strip()


def python_blocks() -> dict[str, str]:
    """Every ```python block of the README, by the heading of its section."""
    blocks: dict[str, str] = {}
    heading = ""
    for part in re.split(r"^(## .*)$", README, flags=re.M):
        if part.startswith("## "):
            heading = part[3:].strip()
            continue
        for n, code in enumerate(re.findall(r"```python\n(.*?)```", part, re.S)):
            blocks[heading if n == 0 else f"{heading} #{n + 1}"] = code
    return blocks


BLOCKS = python_blocks()
RUN_HERE = {"A first job", "Durable execution", "Following what happens",
            "PostgreSQL: many workers on many machines", "Retention", "Periodic jobs",
            "Listening to transitions", "Flow control", "Metrics", "Command line",
            "Durable machines"}  # fmt: skip
RUN_ELSEWHERE = {"HTTP API"}  # against a server: tests/web/test_client.py
RUN_APART = {"Tracing"}  # sets the process's one tracer provider: in a process of its own


def run(code: str, namespace: dict[str, Any]) -> dict[str, Any]:
    namespace.setdefault("__name__", "readme")
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace


def test_every_python_block_of_the_readme_is_run_by_a_test() -> None:
    assert set(BLOCKS) == RUN_HERE | RUN_ELSEWHERE | RUN_APART


def test_the_first_job_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    done = run(BLOCKS["A first job"], {})
    app, job = done["app"], done["job"]
    assert app.get(job.id).result == {"path": "a.png", "width": 100}
    app.close()


def test_the_durable_execution_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    done = run(BLOCKS["Durable execution"], {})
    app = done["app"]
    published = done["publish"].enqueue(url="https://example.com/a")
    approval = done["approve"].enqueue(amount=5)
    app.run_worker(burst=True)
    assert app.get(done["report"].id).result == "report built"
    assert app.get(done["a"].id).result == 3
    assert app.get(done["b"].id).result == 0 + 1 + 4
    assert app.get(published.id).result == "uploaded https://example.com/a"
    assert app.get(approval.id).state.value == "suspended"  # its 60 s sleep
    app.close()


def test_following_events_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    first = run(BLOCKS["A first job"], {})
    code = BLOCKS["Following what happens"].replace("timeout=60", "timeout=0.2")
    assert code != BLOCKS["Following what happens"]
    run(code, {"app": first["app"]})
    first["app"].close()


def test_the_retention_example_sets_what_each_job_keeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    retention = run(BLOCKS["Retention"], {})["app"].retention
    day = 86400.0
    assert retention.keep_for("tasks.resize", "default", instar.State.COMPLETED) == day
    assert retention.keep_for("tasks.resize", "default", instar.State.FAILED) == 30 * day
    assert retention.keep_for("any", "audit", instar.State.COMPLETED) == 365 * day
    assert retention.keep_for("reports.nightly", "audit", instar.State.FAILED) == 90 * day
    assert retention.keep_for("any", "default", instar.State.RUNNING) is None


def test_the_flow_control_example_runs_one_sync_per_user_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    done = run(BLOCKS["Flow control"], {})
    app: instar.App = done["app"]
    with app:
        jobs = [app.enqueue("sync_account", {"user_id": n % 2}) for n in range(4)]
        report = app.run_worker(burst=True, concurrency=4)
        assert report.completed == 4
        assert [app.get(j.id).result for j in jobs] == [f"synced {n % 2}" for n in range(4)]
        limits = {(limit.kind, limit.name) for limit in app.limits()}
        assert limits == {
            ("queue", "emails"),
            ("job", "readme.sync_account"),
            ("job", "readme.crawl"),
        }


def test_the_logging_example_gets_a_start_and_an_end_line_with_their_fields(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    jobs_logger = logging.getLogger("instar.jobs")
    handlers, level = list(jobs_logger.handlers), jobs_logger.level
    try:
        done = run(BLOCKS["Command line"], {})
        assert capsys.readouterr().out.strip() == (
            "[('started', 'resize', None), ('ended', 'resize', 'completed')]"
        )
        done["app"].close()
    finally:
        jobs_logger.handlers[:] = handlers
        jobs_logger.setLevel(level)


def test_the_metrics_example_serves_the_run_it_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    done = run(BLOCKS["Metrics"], {})
    assert done["metrics"].url.startswith("http://127.0.0.1:")
    done["app"].close()


def test_the_periodic_example_enqueues_the_slot_and_its_handler_gets_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    clock = FrozenClock(datetime(2027, 1, 15, 1, 0, tzinfo=UTC).timestamp())
    done = run(BLOCKS["Periodic jobs"], {})
    app: instar.App = done["app"]
    with instar.App(clock=clock) as timed:
        timed.registry.update(app.registry)
        timed.migrate()
        timed.run_worker(burst=True)  # the schedule is recorded: nothing before now
        clock.advance(3 * 3600)  # 04:00 in Paris: the 03:00 slot is due
        timed.run_worker(burst=True, queues=["reports"])
        [job] = timed.jobs()
        assert timed.get(job.id).result == "the report of 2027-01-15"
        [info] = timed.schedules()
        assert info.next_slot == datetime(2027, 1, 16, 3, 0, tzinfo=ZoneInfo("Europe/Paris"))
    app.close()


def test_the_listener_example_hears_the_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    done = run(BLOCKS["Listening to transitions"], {})
    assert done["alerts"] == ["job 1 failed: card declined (retries-exhausted)"]


def section(heading: str) -> str:
    """The text of the README's ``## heading`` section."""
    found = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## )", README, re.S | re.M)
    assert found is not None, heading
    return found.group(1)


MACHINES = section("Durable machines")
ORDER_DIAGRAM, AGENT_DIAGRAM = re.findall(r"```mermaid\n(.*?)```", MACHINES, re.S)
[AGENT_TOML] = re.findall(r"```toml\n(.*?)```", MACHINES, re.S)


def test_the_order_machine_example_runs_and_prints_what_it_says(
    database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    code = BLOCKS["Durable machines"].replace('"sqlite:///shop.db"', repr(database))
    assert code != BLOCKS["Durable machines"]
    done = run(code, {})
    app: instar.App = done["app"]
    with app:
        printed = capsys.readouterr().out.splitlines()
        said = [line.removeprefix("# ") for line in code.splitlines()]
        history = [line for line in said if re.fullmatch(r"\d \w+ \w+ [\w.]+ -> [\w.]+", line)]
        assert printed == ["condition_false", "fulfilment.shipped", *history, "paid", "True"]
        assert len(history) == 4
        m = app.machines
        order = m.get("order", "A-1001")
        assert (order.state, order.seq, order.context["paid"]) == ("paid", 5, 120)
        [rolled] = m.history("order", "A-1001", since_seq=4)
        assert (rolled.kind, rolled.detail) == (
            "rolled_back",
            {"to_seq": 2, "reason": "shipped by mistake; the parcel is back"},
        )
        [refused] = m.refusals("order", "A-1001")
        assert (refused.event, refused.reason) == ("pay", "condition_false")
        [job] = app.jobs()
        assert (job.name, job.args, job.result) == (
            "shop.reserve_stock",
            {"order": "A-1001"},
            {"order": "A-1001", "carrier": "dhl"},
        )
        # The same payment again is the first one's outcome, not a refusal.
        again = m.send("order", "A-1001", "pay", {"amount": 120}, idempotency_key="psp-evt-42")
        assert (again.accepted, again.seq) == (True, 2)
        assert ORDER_DIAGRAM.strip() == m.diagram("order").strip(), "the README draws it"


def _agent_app(database: str) -> instar.App:
    """An App with the jobs the README's agent enqueues: tests pass on the second run."""
    app = instar.App(database)
    runs = []

    @app.job(name="agent.plan")
    def plan(task: str) -> dict[str, Any]:
        return {"steps": [f"read {task}", "change", "test"]}

    @app.job(name="agent.write_code")
    def write_code(plan: list[str]) -> dict[str, Any]:
        return {"files": len(plan)}

    @app.job(name="agent.run_tests")
    def run_tests() -> dict[str, Any]:
        runs.append(1)
        return {"passed": len(runs) >= 2, "failures": 0 if len(runs) >= 2 else 3}

    return app


def test_the_agent_machine_in_toml_registers_and_runs_to_done(
    database: str, tmp_path: Path
) -> None:
    (tmp_path / "agent.toml").write_text(AGENT_TOML)
    with _agent_app(database) as app:
        m = app.machines
        definition = m.register_file(tmp_path / "agent.toml")
        assert definition.warnings == ()
        assert AGENT_DIAGRAM.strip() == m.diagram("agent").strip(), "the README draws it"
        m.create("agent", "fix-42", {"task": "issue 42", "author": "bot"})
        app.run_worker(burst=True)
        waiting = m.get("agent", "fix-42")
        assert (waiting.state, waiting.context["attempts"], waiting.context["tests_passed"]) == (
            "review",
            2,
            True,
        )
        assert m.send("agent", "fix-42", "approve", {"reviewer": "bot"}).reason == (
            "condition_false"
        ), "its author cannot approve it"
        assert m.send("agent", "fix-42", "approve", {"reviewer": "ada"}).state == "done"
        moves = [(e.event, e.to_state) for e in m.history("agent", "fix-42")]
        assert moves == [
            (None, "planning"),
            ("plan_ready", "coding.writing"),
            ("code_written", "coding.testing"),
            ("tests_ran", "coding.writing"),
            ("code_written", "coding.testing"),
            ("tests_ran", "review"),
            ("approve", "done"),
        ]
        assert m.verify("agent", "fix-42").ok


def test_the_readme_quotes_the_problem_a_misspelt_state_gives(tmp_path: Path) -> None:
    misspelt = AGENT_TOML.replace('to = "review"\n', 'to = "reveiw"\n', 1)
    assert misspelt != AGENT_TOML
    app = instar.App(f"sqlite:///{tmp_path / 'agent.db'}")
    with app, pytest.raises(InvalidMachine) as refused:
        app.machines.register_text(misspelt, source="agent.toml")
    [problem] = refused.value.problems
    assert f"(`{problem}`)" in " ".join(MACHINES.split())


def test_enqueueing_inside_your_own_transaction_runs() -> None:
    _postgres_or_skip()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    url = f"{POSTGRES}?options=-csearch_path%3D{schema}"
    with instar.App(f"{POSTGRES}?schema={schema}") as app:

        @app.job
        def ship(order_id: int) -> int:
            return order_id

        app.migrate()
        with psycopg.connect(POSTGRES, autocommit=True) as admin:
            admin.execute(f"CREATE TABLE {schema}.orders (id integer)")
        try:
            run(BLOCKS["PostgreSQL: many workers on many machines"], {
                "psycopg": psycopg, "url": url, "ship": ship
            })  # fmt: skip
            app.run_worker(burst=True)
            assert [(j.name.rsplit(".", 1)[-1], j.result) for j in app.jobs()] == [("ship", 42)]
        finally:
            with psycopg.connect(POSTGRES, autocommit=True) as admin:
                admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.mark.parametrize("names", [Trigger, Actor, AwakeableState, DependencyKind])
def test_the_readme_lists_every_name_of_the_timelines_vocabulary(names: type[Trigger]) -> None:
    for member in names:
        assert f"| `{member.value}` | {member.meaning} |" in README, member


def test_the_readme_draws_the_layers_import_linter_checks() -> None:
    contract = tomllib.loads(PYPROJECT)["tool"]["importlinter"]["contracts"][0]
    assert contract["type"] == "layers"
    drawn = re.search(r"## Architecture\n.*?```\n(.*?)```", README, re.S)
    assert drawn is not None
    firsts = [line.split()[0] for line in drawn.group(1).splitlines() if line[:1].strip()]
    layers = [layer.split()[0].removeprefix("instar.") for layer in contract["layers"]]
    assert firsts[: len(layers) - 1] == layers[:-1]


def test_the_tracing_example_puts_the_run_under_the_span_that_enqueued_it(
    tmp_path: Path,
) -> None:
    script = tmp_path / "tracing_example.py"
    script.write_text(BLOCKS["Tracing"])
    ran = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "['ready -> running', 'running -> completed']"
