"""One database, chosen by one rule everywhere: ``--database`` on the command line,
else a URL written in code, else ``$INSTAR_DATABASE``, else ``./instar.db``; a
choice that overrides a different one is said. Read-only commands never create
or write a database. ``instar demo`` never uses ``$INSTAR_DATABASE``."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import instar
import instar.demo
from instar.app import DatabaseSource
from instar.cli.main import cli

TASKS = """
import instar

app = instar.App({url!r})

@app.job(name="record")
def record(n: int) -> int:
    return n
"""


def _instar(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "INSTAR_DATABASE"}
    return subprocess.run(
        [sys.executable, "-m", "instar.cli.main", *args],
        cwd=cwd,
        env={**environment, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- the App ------------------------------------------------------------------------------


def test_a_url_written_in_code_wins_over_the_environment_and_says_so(
    database: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("INSTAR_DATABASE", "sqlite:///somewhere-else.db")
    with caplog.at_level(logging.WARNING, logger="instar.app"), instar.App(database) as app:
        assert (app.database, app.database_source) == (database, DatabaseSource.CODE)
        app.migrate()
    assert "uses the database written in code" in caplog.text
    assert "somewhere-else.db" in caplog.text
    assert not Path("somewhere-else.db").exists()


def test_the_environment_is_the_default_of_an_app_without_a_url(
    database: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("INSTAR_DATABASE", database)
    with caplog.at_level(logging.WARNING, logger="instar.app"), instar.App() as app:
        assert (app.database, app.database_source) == (database, DatabaseSource.ENVIRONMENT)
    assert caplog.text == ""
    monkeypatch.delenv("INSTAR_DATABASE")
    assert instar.App().database_source is DatabaseSource.DEFAULT
    with caplog.at_level(logging.WARNING, logger="instar.app"):
        monkeypatch.setenv("INSTAR_DATABASE", database)
        instar.App(database)  # the same URL both ways: nothing to warn about
    assert caplog.text == ""


def test_use_database_moves_an_opened_app_to_another_database(
    database: str, tmp_path: Path
) -> None:
    with instar.App(database) as app:

        @app.job(name="record")
        def record(n: int) -> int:
            return n

        record.enqueue(n=1)
        other = f"sqlite:///{tmp_path / 'other.db'}"
        app.use_database(other)
        assert (app.database, app.database_source) == (other, DatabaseSource.COMMAND_LINE)
        assert app.jobs() == []
        record.enqueue(n=2)
        assert [job.args for job in app.jobs()] == [{"n": 2}]


def test_a_read_only_app_creates_and_writes_nothing(database: str, tmp_path: Path) -> None:
    with instar.App(database, read_only=True) as reader, pytest.raises(instar.ConfigurationError):
        reader.jobs()
    if database.startswith("sqlite:///"):
        assert not Path(database.removeprefix("sqlite:///")).exists()
    with instar.App(database) as writer:
        writer.migrate()
    with instar.App(database, read_only=True) as reader:
        assert reader.jobs() == []
        assert reader.counts() == {}


# -- the command line -----------------------------------------------------------------------


def test_a_worker_uses_the_url_written_in_its_app_not_the_environment(tmp_path: Path) -> None:
    """The issue's case: Python enqueues into the file written in code while
    $INSTAR_DATABASE names another; the worker works on the same file, and says why."""
    code_db, env_db = tmp_path / "envtest.db", tmp_path / "other.db"
    (tmp_path / "envtest.py").write_text(TASKS.format(url=f"sqlite:///{code_db}"))
    env = {"INSTAR_DATABASE": f"sqlite:///{env_db}"}
    made = _instar(
        "enqueue", "record", "--app", "envtest:app", "--args", '{"n": 4}', "--json",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "uses the database written in code" in made.stderr
    ran = _instar("worker", "--app", "envtest:app", "--burst", cwd=tmp_path, env=env)
    assert ran.returncode == 0, ran.stderr
    assert f"database sqlite:///{code_db} (written in code)" in ran.stderr
    assert "1 completed" in ran.stderr
    assert not env_db.exists()
    with instar.App(f"sqlite:///{code_db}") as app:
        assert app.get(json.loads(made.stdout)["id"]).state is instar.State.COMPLETED


def test_database_on_the_command_line_overrides_code_and_says_so(
    database: str, tmp_path: Path
) -> None:
    code_db = tmp_path / "in-code.db"
    (tmp_path / "tasks.py").write_text(TASKS.format(url=f"sqlite:///{code_db}"))
    made = _instar(
        "enqueue", "record", "--app", "tasks:app", "--args", '{"n": 1}', "--database", database,
        cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert f"note: using --database {database}" in made.stderr.replace("\n", "")
    assert "written in code in tasks:app" in made.stderr
    assert not code_db.exists()
    with instar.App(database) as app:
        assert [job.args for job in app.jobs()] == [{"n": 1}]


def test_the_environment_names_the_database_of_commands_without_an_app(
    database: str, tmp_path: Path
) -> None:
    with instar.App(database) as app:
        app.migrate()
    listed = _instar("jobs", "--json", cwd=tmp_path, env={"INSTAR_DATABASE": database})
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    assert not (tmp_path / "instar.db").exists()


@pytest.mark.parametrize("command", [["jobs"], ["show", "1"], ["queues"]])
def test_a_reading_command_never_creates_a_database(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "missing.db"
    result = _instar(*command, "--database", f"sqlite:///{missing}", cwd=tmp_path)
    assert result.returncode == instar.ConfigurationError.exit_code
    assert "reading never creates one" in result.stderr
    assert result.stderr.count("\n") == 1
    assert not missing.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_reading_command_never_writes_and_lists_a_read_only_file(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with instar.App(f"sqlite:///{path}") as app:

        @app.job(name="record")
        def record(n: int) -> int:
            return n

        job = record.enqueue(n=1)
    before = hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns
    path.chmod(0o444)
    url = f"sqlite:///{path}"
    listed = _instar("jobs", "--json", "--database", url, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert [j["id"] for j in json.loads(listed.stdout)] == [job.id]
    assert _instar("show", str(job.id), "--database", url, cwd=tmp_path).returncode == 0
    assert _instar("queues", "--database", url, cwd=tmp_path).returncode == 0
    assert (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns) == before


def test_the_demo_runs_on_a_fresh_database_unless_given_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[str | None] = []

    def fake_demo(database: str | None, console: object) -> int:
        seen.append(database)
        return 0

    monkeypatch.setattr(instar.demo, "run_demo", fake_demo)
    monkeypatch.setenv("INSTAR_DATABASE", f"sqlite:///{tmp_path / 'mine.db'}")
    runner = CliRunner()
    assert runner.invoke(cli, ["demo"]).exit_code == 0
    given = f"sqlite:///{tmp_path / 'tour.db'}"
    assert runner.invoke(cli, ["demo", "--database", given]).exit_code == 0
    assert seen == [None, given]
    assert not (tmp_path / "mine.db").exists()
