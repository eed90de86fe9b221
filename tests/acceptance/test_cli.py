"""The ``instar`` command, run as a subprocess the way a user runs it."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
import pytest
from click.testing import CliRunner, Result

import instar.app as instar_app
from instar.app import App
from instar.cli.main import TOPICS, cli
from instar.diagram import render
from instar.errors import (
    InstanceNotFound,
    InvalidOption,
    InvalidTransition,
    JobNotFound,
)
from instar.maintenance.state_flows import StateFlows
from instar.retry import Retry
from instar.store import open_store
from instar.store.contract import Store
from instar.store.sqlite.store import SQLiteStore
from tests.jobs_app import app as jobs_app
from tests.periodic_app import app as periodic_app

ROOT = Path(__file__).resolve().parents[2]


def instar(*args: str, database: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INSTAR_TEST_LOG": os.devnull}
    if database is not None:
        env["INSTAR_DATABASE"] = database
    return subprocess.run(
        [sys.executable, "-m", "instar.cli.main", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A migrated SQLite database (read-only commands never create one)."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    with instar_app.App(url) as app:
        app.migrate()
    return url


def test_every_command_is_listed_under_the_module_that_defines_it() -> None:
    for topic, names in TOPICS.items():
        module = importlib.import_module(f"instar.cli.{topic}")
        assert tuple(command.name for command in module.COMMANDS) == names


def test_enqueue_run_and_show_a_job(db: str) -> None:
    made = instar(
        "enqueue",
        "record",
        "--app",
        "tests.jobs_app:app",
        "--args",
        '{"n": 7}',
        "--json",
        database=db,
    )
    assert made.returncode == 0, made.stderr
    job = json.loads(made.stdout)
    assert (job["state"], job["args"]) == ("ready", {"n": 7})

    ran = instar("worker", "--app", "tests.jobs_app:app", "--burst", database=db)
    assert ran.returncode == 0, ran.stderr
    assert "1 completed" in ran.stderr

    shown = json.loads(instar("show", str(job["id"]), "--json", database=db).stdout)
    assert shown["job"]["state"] == "completed"
    assert shown["job"]["result"] == 7
    assert [e["to_state"] for e in shown["events"]] == ["ready", "running", "completed"]
    assert shown["events"][0]["actor"] == "cli"

    table = instar("show", str(job["id"]), database=db)
    assert table.returncode == 0 and "completed" in table.stdout


def test_jobs_lists_and_filters(db: str) -> None:
    for n in range(3):
        instar(
            "enqueue",
            "record",
            "--app",
            "tests.jobs_app:app",
            "--args",
            json.dumps({"n": n}),
            database=db,
        )
    instar(
        "enqueue",
        "sleepy",
        "--app",
        "tests.jobs_app:app",
        "--args",
        '{"seconds": 1}',
        "--delay",
        "60",
        database=db,
    )
    listed = json.loads(instar("jobs", "--json", database=db).stdout)
    assert len(listed) == 4
    scheduled = json.loads(instar("jobs", "--state", "scheduled", "--json", database=db).stdout)
    assert [j["name"] for j in scheduled] == ["sleepy"]
    by_queue = json.loads(instar("jobs", "--queue", "fragile", "--json", database=db).stdout)
    assert len(by_queue) == 1
    assert "record" in instar("jobs", database=db).stdout


def test_cancel_and_retry_from_the_command_line(db: str) -> None:
    made = json.loads(
        instar(
            "enqueue",
            "record",
            "--app",
            "tests.jobs_app:app",
            "--args",
            '{"n": 1}',
            "--json",
            database=db,
        ).stdout
    )
    cancelled = instar("cancel", str(made["id"]), database=db)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    again = instar("cancel", str(made["id"]), database=db)
    assert again.returncode == 3
    assert again.stderr == "error: job 1 is already cancelled\n"
    refused = instar("retry", str(made["id"]), database=db)
    assert refused.returncode == 3
    assert "job 1 is cancelled; only a failed job can be retried" in refused.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["show", "404"], 4, "no job with id 404"),
        (["enqueue", "nope", "--app", "tests.jobs_app:app"], 5, "no job named 'nope'"),
        (
            ["enqueue", "record", "--app", "tests.jobs_app:app", "--args", "{bad"],
            2,
            "not valid JSON",
        ),
        (
            ["enqueue", "record", "--app", "tests.jobs_app:app", "--args", "{}"],
            6,
            "missing a required argument",
        ),
        (
            [
                "enqueue",
                "record",
                "--app",
                "tests.jobs_app:app",
                "--args",
                '{"n": 1}',
                "--run-at",
                "2030-01-01T00:00",
            ],
            2,
            "no time zone",
        ),
        (["enqueue", "record", "--app", "no_such_module:app"], 7, "cannot import"),
        (["worker"], 7, "needs --app"),
        (["jobs", "--state", "done"], 2, "unknown state 'done'"),
    ],
)
def test_bad_input_gets_a_clear_error_and_writes_nothing(
    db: str, args: list[str], code: int, message: str
) -> None:
    result = instar(*args, database=db)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads(instar("jobs", "--json", database=db).stdout) == []


def test_an_unopenable_database_is_a_clear_error() -> None:
    result = instar("jobs", "--database", "sqlite:////no/such/dir/x.db")
    assert result.returncode == 7
    assert "folder '/no/such/dir' does not exist" in result.stderr


@pytest.mark.parametrize("fmt", ["table", "mermaid", "dot"])
def test_lifecycle_is_drawn_from_the_table(fmt: str) -> None:
    result = instar("lifecycle", "--format", fmt)
    assert result.returncode == 0
    assert result.stdout.strip() == render(fmt).strip()  # type: ignore[arg-type]


def test_prune_previews_then_deletes_old_finished_jobs(db: str) -> None:
    with instar_app.App(db) as app:
        app.job(name="work")(lambda: None)
        jobs = app.enqueue_many("work", [{}] * 4)
        for job in jobs[:3]:
            app.cancel(job.id)
        StateFlows(app.engine).run_once()  # a worker's maintenance would have
    chosen = ("--older-than", "0s", "--state", "cancelled")
    preview = instar("prune", *chosen, "--dry-run", "--json", database=db)
    assert preview.returncode == 0, preview.stderr
    # SQLite keeps the newest job and the newest event's job (ids are never reused)
    assert json.loads(preview.stdout) == {
        "dry_run": True,
        "pruned": 2,
        "by_queue_and_state": [{"queue": "default", "state": "cancelled", "jobs": 2}],
    }
    done = instar("prune", *chosen, database=db)
    assert done.returncode == 0 and "pruned 2 finished job(s)" in done.stdout
    with instar_app.App(db) as app:
        assert [job.id for job in app.jobs()] == [jobs[3].id, jobs[2].id]
    bad = instar("prune", "--older-than", "3 weeks", database=db)
    assert bad.returncode == 2 and "--older-than must be a duration" in bad.stderr


def test_migrate_creates_the_schema(db: str) -> None:
    result = instar("migrate", database=db)
    assert result.returncode == 0 and "up to date" in result.stdout
    assert Path(db.removeprefix("sqlite:///")).exists()


def test_every_command_has_help() -> None:
    for name in cli.list_commands(click.Context(cli)):
        result = instar(name, "--help")
        assert result.returncode == 0
        assert "Usage:" in result.stdout


def test_pause_resume_and_queue_commands(db: str) -> None:
    made = json.loads(
        instar(
            "enqueue",
            "record",
            "--app",
            "tests.jobs_app:app",
            "--args",
            '{"n": 1}',
            "--json",
            database=db,
        ).stdout
    )
    job_id = str(made["id"])
    paused = instar("pause", job_id, database=db)
    assert paused.returncode == 0 and "paused" in paused.stdout
    assert (
        json.loads(instar("show", job_id, "--json", database=db).stdout)["job"]["state"] == "paused"
    )
    assert instar("resume", job_id, database=db).returncode == 0
    assert instar("pause-queue", "default", database=db).returncode == 0
    stats = json.loads(instar("queues", "--json", database=db).stdout)
    [default] = stats
    assert default.pop("oldest_ready_age") >= 0  # the job has waited since it was resumed
    assert default == {"queue": "default", "paused": True, "counts": {"ready": 1}}
    assert instar("worker", "--app", "tests.jobs_app:app", "--burst", database=db).returncode == 0
    assert (
        json.loads(instar("show", job_id, "--json", database=db).stdout)["job"]["state"] == "ready"
    )
    assert instar("resume-queue", "default", database=db).returncode == 0
    assert instar("worker", "--app", "tests.jobs_app:app", "--burst", database=db).returncode == 0
    assert (
        json.loads(instar("show", job_id, "--json", database=db).stdout)["job"]["state"]
        == "completed"
    )
    refused = instar("resume", job_id, database=db)
    assert refused.returncode == 3 and "not paused" in refused.stderr


def test_resolve_and_reject_from_the_command_line(db: str) -> None:
    waiting = json.loads(
        instar("enqueue", "approval", "--app", "tests.jobs_app:app", "--json", database=db).stdout
    )
    assert instar("worker", "--app", "tests.jobs_app:app", "--burst", database=db).returncode == 0
    shown = json.loads(instar("show", str(waiting["id"]), "--json", database=db).stdout)
    assert shown["job"]["state"] == "suspended"
    [awakeable] = shown["awakeables"]
    bad = instar("resolve", awakeable["id"], "--value", "{nope", database=db)
    assert bad.returncode == 2 and "not valid JSON" in bad.stderr
    ok = instar("resolve", awakeable["id"], "--value", '{"by": "ops"}', database=db)
    assert ok.returncode == 0, ok.stderr
    again = instar("reject", awakeable["id"], "--reason", "late", database=db)
    assert again.returncode == 3 and "resolved already" in again.stderr
    unknown = instar("resolve", "no-such-id", database=db)
    assert unknown.returncode == 4 and "no awakeable" in unknown.stderr
    assert instar("worker", "--app", "tests.jobs_app:app", "--burst", database=db).returncode == 0
    done = json.loads(instar("show", str(waiting["id"]), "--json", database=db).stdout)
    assert (done["job"]["state"], done["job"]["result"]) == ("completed", "approved by ops")


def test_show_gives_the_phase_checkpoint_children_and_dependencies(db: str) -> None:
    first = json.loads(
        instar("enqueue", "phased", "--app", "tests.jobs_app:app", "--json", database=db).stdout
    )
    assert instar("worker", "--app", "tests.jobs_app:app", "--burst", database=db).returncode == 0
    shown = json.loads(instar("show", str(first["id"]), "--json", database=db).stdout)
    assert shown["phase"] == "collecting"
    assert shown["job"]["checkpoint"] == {"page": 3}
    assert (shown["children"], shown["dependencies"], shown["awakeables"]) == ([], [], [])
    table = instar("show", str(first["id"]), database=db).stdout
    assert "collecting" in table


def test_a_worker_waits_for_an_unreachable_database_and_says_so() -> None:
    command = [sys.executable, "-m", "instar.cli.main", "worker", "--app", "tests.jobs_app:app"]
    proc = subprocess.Popen(
        [*command, "--database", "postgresql://postgres@127.0.0.1:1/jobsdb"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=2.0)
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert "cannot connect to PostgreSQL at 127.0.0.1:1/jobsdb" in stderr
    assert stderr.count("trying again") >= 2
    assert "Traceback" not in stderr


def test_every_app_a_command_opens_is_closed_again(
    db: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Each command runs in this process; every store its App opened, on success or on
    error, must be closed by the time the command returns."""
    opened: list[Store] = []
    closed: list[SQLiteStore] = []
    real_open, real_close = open_store, SQLiteStore.close

    def counting_open(url: str, **options: Any) -> Store:
        store = real_open(url, **options)
        opened.append(store)
        return store

    def counting_close(store: SQLiteStore) -> None:
        closed.append(store)
        real_close(store)

    def no_hard_exit(code: int) -> NoReturn:
        # The worker leaves with os._exit while a handler thread lingers; here that
        # would end pytest itself.
        raise SystemExit(code)

    monkeypatch.setattr(instar_app, "open_store", counting_open)
    monkeypatch.setattr(SQLiteStore, "close", counting_close)
    monkeypatch.setattr(os, "_exit", no_hard_exit)
    # --app binds the shared handlers' App to this test's database; undo that afterwards.
    monkeypatch.setattr(jobs_app, "database", jobs_app.database)
    monkeypatch.setattr(jobs_app, "database_source", jobs_app.database_source)
    monkeypatch.setattr(periodic_app, "database", periodic_app.database)
    monkeypatch.setattr(periodic_app, "database_source", periodic_app.database_source)
    monkeypatch.setenv("INSTAR_DATABASE", db)
    monkeypatch.setenv("INSTAR_TEST_LOG", os.devnull)
    runner = CliRunner()
    tried: set[str] = set()

    def run(*args: str, code: int = 0) -> Result:
        tried.add(args[0])
        before = len(opened)
        result = runner.invoke(cli, list(args))
        assert result.exit_code == code, (args, result.output, result.exception)
        assert len(opened) > before, f"{args} opened no App; this test proves nothing for it"
        left_open = [s for s in opened if not any(s is c for c in closed)]
        assert not left_open, f"instar {' '.join(args)} left {len(left_open)} store(s) open"
        return result

    handlers = ("--app", "tests.jobs_app:app")
    run("migrate")
    run("enqueue", "record", *handlers, "--args", '{"n": 1}')
    run("jobs")
    run("jobs", "--json")
    run("show", "1")
    run("show", "999", code=JobNotFound.exit_code)
    run("pause", "1")
    run("resume", "1")
    run("cancel", "1")
    run("retry", "1", code=InvalidTransition.exit_code)
    run("stop", "1", code=InvalidTransition.exit_code)
    run("queues")
    run("pause-queue", "default")
    run("resume-queue", "default")
    approval = json.loads(run("enqueue", "approval", *handlers, "--json").stdout)
    run("worker", *handlers, "--burst")
    [awakeable] = json.loads(run("show", str(approval["id"]), "--json").stdout)["awakeables"]
    run("resolve", awakeable["id"], "--value", '{"by": "ops"}')
    run("reject", awakeable["id"], "--reason", "late", code=InvalidTransition.exit_code)
    run("queues", "--json")
    run("token", "create", "ops", "--scope", "read")
    run("token", "list")
    run("token", "revoke", "ops")
    run("prune", "--dry-run")
    run("prune", "--older-than", "1d", *handlers)
    schedules = ("--app", "tests.periodic_app:app")
    run("periodic", *schedules)
    run("pause-periodic", "hourly", *schedules)
    run("resume-periodic", "hourly", *schedules)
    run("pause-periodic", "weekly", *schedules, code=InvalidOption.exit_code)
    machine = tmp_path / "door.toml"
    machine.write_text(
        '[machine]\nname = "door"\nversion = 1\ninitial = "shut"\n'
        "[states.shut]\n[states.gone]\nfinal = true\n"
        '[[transitions]]\nfrom = "shut"\non = "remove"\nto = "gone"\n'
    )
    run("machines", "register", str(machine))
    run("machines", "create", "door", "d1")
    run("machines", "send", "door", "d1", "open", code=InvalidTransition.exit_code)
    run("machines", "send", "door", "d1", "remove")
    run("machines", "show", "door", "d1")
    run("machines", "show", "door", "d9", code=InstanceNotFound.exit_code)
    run("machines", "list", "door")
    run("machines", "history", "door", "d1")
    run("machines", "rollback", "door", "d1", "--to-seq", "1", "--reason", "back")
    run("machines", "verify", "door", "d1")
    run("machines", "verify", "--all")
    run("machines", "diagram", "door")
    run("machines", "definitions")
    # serve runs until it is stopped: tests/web starts and stops it as a subprocess.
    untried = {"lifecycle", "demo", "serve"}
    every = set(cli.list_commands(click.Context(cli)))
    assert tried == every - untried, "a command is not tried here"


def test_an_errors_exit_code_comes_from_its_class(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    result = instar("show", "999", database=db)
    assert result.returncode == JobNotFound.exit_code
    assert "no job with id 999" in result.stderr

    monkeypatch.setattr(JobNotFound, "exit_code", 42)
    moved = CliRunner().invoke(cli, ["show", "999", "--database", db])
    assert moved.exit_code == 42
    assert "no job with id 999" in moved.stderr


def test_migrate_reports_a_damaged_database_instead_of_up_to_date(db: str) -> None:
    path = Path(db.removeprefix("sqlite:///"))
    with App(db) as app:
        app.registry.update(jobs_app.registry)
        app.enqueue_many("record", [{"n": n} for n in range(2000)])
    data = bytearray(path.read_bytes())
    page = 4096
    middle = len(data) // page // 2
    for n in range(middle, middle + 3):  # scribble over three pages in the middle
        data[page * n + 100 : page * n + 200] = b"\xff" * 100
    path.write_bytes(bytes(data))
    migrated = instar("migrate", database=db)
    assert migrated.returncode == 7, migrated.stdout + migrated.stderr
    assert "is damaged" in migrated.stderr and "up to date" not in migrated.stdout
    assert migrated.stderr.count("\n") == 1


def test_a_job_name_or_error_that_is_not_utf8_prints_escaped(db: str, tmp_path: Path) -> None:
    with App(db) as app:

        @app.job(name="tests.listing", retry=Retry(max_attempts=1))
        def listing() -> None:
            raise FileNotFoundError("missing caf\udce9.txt")

        job = listing.enqueue()
        app.run_worker(burst=True)
    shown = instar("show", str(job.id), database=db)
    assert shown.returncode == 0, shown.stderr
    assert "caf\\udce9" in shown.stdout.replace("\n", "")
    as_json = json.loads(instar("show", str(job.id), "--json", database=db).stdout)
    assert as_json["job"]["error"]["message"] == "missing caf\udce9.txt"


def test_show_and_jobs_say_when_no_live_worker_has_a_jobs_handler(db: str) -> None:
    made = instar(
        "enqueue", "record", "--app", "tests.jobs_app:app", "--args", '{"n": 1}', database=db
    )
    assert made.returncode == 0, made.stderr
    shown = instar("show", "1", database=db)
    assert "no live worker has a handler for record" in shown.stdout.replace("\n", " ")
    listed = instar("jobs", "--name", "record", database=db)
    assert "no live worker has a handler for: record" in listed.stdout
    ran = instar("worker", "--app", "tests.jobs_app:app", "--burst", database=db)
    assert ran.returncode == 0, ran.stderr
    assert "no live worker" not in instar("show", "1", database=db).stdout


def test_periodic_lists_schedules_pauses_one_and_reports_one_gone_from_the_code(
    db: str,
) -> None:
    app = ("--app", "tests.periodic_app:app")
    listed = instar("periodic", *app, "--json", database=db)
    assert listed.returncode == 0, listed.stderr
    found = {s["name"]: s for s in json.loads(listed.stdout)}
    assert set(found) == {"reports.hourly", "reports.nightly"}
    nightly = found["reports.nightly"]
    assert (nightly["expression"], nightly["tz"], nightly["paused"]) == (
        "30 2 * * *",
        "Europe/Paris",
        False,
    )
    assert nightly["next_slot"].endswith(("+01:00", "+02:00")) and nightly["last_slot"] is None
    paused = instar("pause-periodic", "hourly", *app, database=db)
    assert paused.returncode == 0 and "paused" in paused.stdout, paused.stderr
    again = instar("pause-periodic", "hourly", *app, database=db)
    assert "was paused already" in again.stdout
    after = json.loads(instar("periodic", *app, "--json", database=db).stdout)
    assert {s["name"]: s["paused"] for s in after} == {
        "reports.hourly": True,
        "reports.nightly": False,
    }
    # The next release no longer has these jobs: the stored one is stale.
    other = instar("periodic", "--app", "tests.jobs_app:app", "--json", database=db)
    [stale] = json.loads(other.stdout)
    assert (stale["name"], stale["stale"], stale["next_slot"]) == ("reports.hourly", True, None)
    table = instar("periodic", "--app", "tests.jobs_app:app", database=db)
    assert "stale" in table.stdout
    unknown = instar("pause-periodic", "weekly", *app, database=db)
    assert unknown.returncode == 2
    assert "no periodic job named 'weekly'" in unknown.stderr
    resumed = instar("resume-periodic", "reports.hourly", *app, database=db)
    assert "resumed" in resumed.stdout


def test_queues_lists_each_limit_the_workers_run_with_and_what_runs_and_waits(db: str) -> None:
    assert instar("migrate", database=db).returncode == 0
    for user in (1, 1, 2):
        made = instar(
            "enqueue", "per_user", "--app", "tests.flow_app:app",
            "--args", json.dumps({"user": user}), database=db,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
    ran = instar("worker", "--app", "tests.flow_app:app", "--burst", database=db)
    assert ran.returncode == 0, ran.stderr
    shown = instar("queues", database=db)
    assert shown.returncode == 0, shown.stderr
    lines = {
        line.split()[1]: line.split()
        for line in shown.stdout.splitlines()
        if "limit" not in line and line.startswith(("job ", "queue "))
    }
    assert lines["per_user"][2:] == ["1", "per", "user:{user}", "0", "0"]
    assert lines["paced"][2:] == ["10", "per", "1", "s", "0", "0"]
    assert lines["single"][2:] == ["1", "0", "0"]
