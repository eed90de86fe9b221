"""The command line is pleasant: it reads at 80 columns, every command speaks JSON,
every bad input is one clear line (never a traceback), errors are in a user's words,
and no password ever appears in what it prints."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import instar
from instar.registry.limits import MAX_ID
from instar.vocabulary import Trigger

TASKS = """
import instar

app = instar.App()

@app.job(name="record")
def record(n: int) -> int:
    return n

@app.job(name="resize", queue="images")
def resize(path: str, width: int) -> dict:
    return {"path": path, "width": width}

@app.job(name="boom", retry=instar.Retry(max_attempts=1))
def boom(ctx: instar.Context) -> None:
    ctx.phase("collecting")
    ctx.progress(1, 2, "half way through a long enough message to need wrapping")
    raise ValueError("the upstream service said no, with a message that is rather long")

@app.job(name="approval")
def approval(ctx: instar.Context) -> str:
    return ctx.await_signal("approve", timeout=3600)["by"]
"""


@pytest.fixture
def here(tmp_path: Path) -> Path:
    """A folder holding ``tasks.py``, where the commands run."""
    (tmp_path / "tasks.py").write_text(TASKS)
    return tmp_path


def run(
    here: Path, database: str | None, *args: str | bytes, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``instar ARGS`` as a user runs it, in an 80-column terminal."""
    env = {k: v for k, v in os.environ.items() if k != "INSTAR_DATABASE"}
    env["COLUMNS"] = "80"
    if database is not None:
        env["INSTAR_DATABASE"] = database
    return subprocess.run(
        [sys.executable, "-m", "instar.cli.main", *args],
        cwd=here,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        errors="backslashreplace",
        timeout=60,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    """Exit ``code``, and one line on stderr that says ``words``; no traceback."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert result.stderr.startswith("error: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "UnicodeEncodeError" not in result.stderr


RECORD = ["enqueue", "record", "--app", "tasks:app"]


def enqueue(here: Path, database: str, name: str, args: dict[str, Any] | None = None) -> int:
    made = run(
        here, database, "enqueue", name, "--app", "tasks:app", "--args", json.dumps(args or {}),
        "--json",
    )  # fmt: skip
    return int(json.loads(ok(made))["id"])


def work(here: Path, database: str) -> subprocess.CompletedProcess[str]:
    return run(here, database, "worker", "--app", "tasks:app", "--burst")


# -- 80 columns -----------------------------------------------------------------------


def test_show_reads_at_80_columns_and_cuts_no_trigger(here: Path, database: str) -> None:
    job_id = enqueue(here, database, "boom")
    ok(work(here, database))
    shown = ok(run(here, database, "show", str(job_id)))
    lines = shown.splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    events = json.loads(ok(run(here, database, "show", str(job_id), "--json")))["events"]
    timeline = shown[shown.index("timeline (") :]
    assert "…" not in timeline
    for event in events:
        assert re.search(rf"\b{re.escape(event['trigger'])}\b", timeline), event["trigger"]
    assert "ValueError: the upstream service said no" in shown
    assert re.search(r"created_at\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC", shown)
    assert re.search(r"time in each state: ready \d+\.\d\ds · running \d", shown)
    assert "failed" in shown.splitlines()[-1]
    assert re.search(r"claimed .*attempt\s+1 · worker", timeline)


def test_show_keeps_the_longest_trigger_names_whole_at_80_columns(
    here: Path, database: str
) -> None:
    first = enqueue(here, database, "record", {"n": 1})
    with instar.App(database) as app:

        @app.job(name="record")
        def record(n: int) -> int:
            return n

        dependant = record.enqueue(n=2, after=[first]).id
    ok(run(here, database, "cancel", str(first)))
    shown = ok(run(here, database, "show", str(dependant)))
    assert all(len(line) <= 80 for line in shown.splitlines())
    assert "dependency-failed" in shown and "…" not in shown
    longest = max((t.value for t in Trigger), key=len)
    assert len(longest) == len("dependency-failed")  # the widths are planned for these names


def test_show_prints_arguments_that_look_like_markup_as_they_are(here: Path, database: str) -> None:
    with instar.App(database) as app:

        @app.job(name="resize", queue="images")
        def resize(path: str, width: int) -> None: ...

        job_id = resize.enqueue(path="[/tmp]/[bold]a.png", width=2).id
    shown = ok(run(here, database, "show", str(job_id)))
    assert '"path": "[/tmp]/[bold]a.png"' in shown


def test_jobs_fits_80_columns_says_how_many_and_pages(here: Path, database: str) -> None:
    ids = [enqueue(here, database, "record", {"n": n}) for n in range(5)]
    listed = ok(run(here, database, "jobs", "--limit", "3"))
    assert all(len(line) <= 80 for line in listed.splitlines())
    assert f"showing 3 of 5 jobs, newest first; next page: instar jobs --before {ids[2]}" in (
        listed.replace("\n", " ")
    )
    rest = json.loads(ok(run(here, database, "jobs", "--before", str(ids[2]), "--json")))
    assert [job["id"] for job in rest] == [ids[1], ids[0]]
    last = ok(run(here, database, "jobs", "--before", str(ids[2]), "--limit", "2"))
    assert "next page" not in last
    filtered = ok(run(here, database, "jobs", "--state", "ready", "--limit", "1"))
    assert "showing 1 of 5 jobs" in filtered and "--state ready --before" in filtered
    assert "no jobs older than job 1" in ok(run(here, database, "jobs", "--before", "1"))


# -- JSON from every command -----------------------------------------------------------------


def test_every_verb_prints_json_with_the_resulting_record(here: Path, database: str) -> None:
    job_id = str(enqueue(here, database, "record", {"n": 1}))
    paused = json.loads(ok(run(here, database, "pause", job_id, "--json")))
    assert (paused["id"], paused["state"]) == (int(job_id), "paused")
    assert json.loads(ok(run(here, database, "resume", job_id, "--json")))["state"] == "ready"
    assert json.loads(ok(run(here, database, "cancel", job_id, "--json")))["state"] == "cancelled"
    failed = str(enqueue(here, database, "boom"))
    report = json.loads(
        ok(run(here, database, "worker", "--app", "tasks:app", "--burst", "--json"))
    )
    assert (report["failed"], report["completed"]) == (1, 0)
    assert json.loads(ok(run(here, database, "retry", failed, "--json")))["state"] == "ready"
    queue = json.loads(ok(run(here, database, "pause-queue", "default", "--json")))
    assert queue.pop("oldest_ready_age") >= 0  # the retried job is ready
    assert queue == {"queue": "default", "paused": True, "counts": {"ready": 1, "cancelled": 1}}
    resumed = json.loads(ok(run(here, database, "resume-queue", "default", "--json")))
    assert resumed["paused"] is False
    waiting = str(enqueue(here, database, "approval"))
    ok(run(here, database, "cancel", failed))
    ok(work(here, database))
    [awakeable] = json.loads(ok(run(here, database, "show", waiting, "--json")))["awakeables"]
    resolved = json.loads(
        ok(run(here, database, "resolve", awakeable["id"], "--value", '{"by": "ops"}', "--json"))
    )
    assert (resolved["state"], resolved["value"]) == ("resolved", {"by": "ops"})
    migrated = json.loads(ok(run(here, database, "migrate", "--json")))
    assert migrated["schema_version"] >= 1 and migrated["database"]
    drawn = json.loads(ok(run(here, None, "lifecycle", "--json")))
    assert {s["state"] for s in drawn["states"]} == {s.value for s in instar.State}


def test_reject_and_stop_print_json_too(here: Path, database: str) -> None:
    waiting = str(enqueue(here, database, "approval"))
    ok(work(here, database))
    [awakeable] = json.loads(ok(run(here, database, "show", waiting, "--json")))["awakeables"]
    rejected = json.loads(
        ok(run(here, database, "reject", awakeable["id"], "--reason", "late", "--json"))
    )
    assert (rejected["state"], rejected["reason"]) == ("rejected", "late")
    refused = run(here, database, "stop", waiting, "--json")
    one_line_error(refused, 3, "stop applies only to a service job that is serving")


# -- errors in a user's words ---------------------------------------------------------------------


def test_refused_verbs_say_why_in_plain_words(here: Path, database: str) -> None:
    job_id = str(enqueue(here, database, "record", {"n": 1}))
    one_line_error(
        run(here, database, "stop", job_id),
        3,
        f"stop applies only to a service job that is serving (job {job_id} is ready)",
    )
    one_line_error(
        run(here, database, "resume", job_id),
        3,
        f"job {job_id} is ready, not paused; only a paused job can be resumed",
    )
    ok(run(here, database, "pause", job_id))
    one_line_error(run(here, database, "pause", job_id), 3, f"job {job_id} is already paused")
    ok(run(here, database, "cancel", job_id))
    one_line_error(run(here, database, "cancel", job_id), 3, f"job {job_id} is already cancelled")
    one_line_error(
        run(here, database, "pause", job_id),
        3,
        f"pause applies only to a job that is scheduled, ready, running or backing-off "
        f"(job {job_id} is cancelled)",
    )
    done = str(enqueue(here, database, "record", {"n": 2}))
    ok(work(here, database))
    one_line_error(
        run(here, database, "cancel", done),
        3,
        f"job {done} has already completed; only a job that has not ended can be cancelled",
    )


def test_a_queue_no_job_has_been_on_is_refused_unless_new(here: Path, database: str) -> None:
    enqueue(here, database, "resize", {"path": "a.png", "width": 1})
    one_line_error(
        run(here, database, "pause-queue", "imgaes"),
        2,
        "no job has been on queue 'imgaes' (known queues: images)",
    )
    assert "queue fresh paused" in ok(run(here, database, "pause-queue", "fresh", "--new"))
    assert "queue fresh resumed" in ok(run(here, database, "resume-queue", "fresh"))
    assert "was not paused" in ok(run(here, database, "resume-queue", "images"))


# -- bad input: one line each -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["show", "99999999999999999999999"], 2, f"ids are from 1 to {MAX_ID}"),
        (["show", str(MAX_ID + 1)], 2, "out of range"),
        (["show", "0"], 2, "out of range"),
        (["cancel", "-5"], 2, "No such option"),
        (["retry", "twelve"], 2, "'twelve' is not a job id"),
        (["jobs", "--before", "1e3"], 2, "'1e3' is not a job id"),
        (["jobs", "--limit", "0"], 2, "limit must be from 1 to 10,000"),
        (["show"], 2, "Missing argument 'JOB_ID'; see 'instar show --help'"),
        (["no-such-command"], 2, "No such command"),
        (["worker", "--app", "tasks:app", "--concurrency", "0"], 2, "--concurrency must be"),
        ([*RECORD, "--delay", "inf"], 2, "at most 315,360,000"),
        ([*RECORD, "--delay", "nan"], 2, "got NaN"),
        ([*RECORD, "--delay", "-1"], 2, "must not be negative"),
        (
            [*RECORD, "--priority", "2147483648"],
            2,
            "priority must be from -2,147,483,648 to 2,147,483,647",
        ),
        (
            [*RECORD, "--args", '{"n": 1}', "--run-at", "9999-01-01T00:00Z"],
            2,
            "more than 3,650 days ahead",
        ),
        (
            ["enqueue", "resize", "--app", "tasks:app", "--args", '{"path": "a", "width": "wide"}'],
            6,
            "width: Input should be a valid integer",
        ),
        ([*RECORD, "--args", "@missing.json"], 2, "cannot read --args file 'missing.json'"),
        ([*RECORD, "--key", "k" * 1001], 2, "over the limit of 1,000"),
        (["enqueue", "n" * 300, "--app", "tasks:app"], 5, "no job named 'nnnn"),
        (["resolve", "x" * 300], 2, "awakeable id"),
    ],
)  # fmt: skip
def test_bad_input_is_one_clear_line_and_writes_nothing(
    here: Path, database: str, args: list[str], code: int, words: str
) -> None:
    with instar.App(database) as app:
        app.migrate()
        one_line_error(run(here, database, *args), code, words)
        assert app.jobs() == []


@pytest.mark.parametrize(
    "args",
    [
        [b"enqueue", b"record", b"--app", b"tasks:app", b"--queue", b"im\xffages"],
        [b"enqueue", b"rec\xfford", b"--app", b"tasks:app"],
        [b"enqueue", b"record", b"--app", b"tasks:app", b"--key", b"\xfe\xff"],
        [b"jobs", b"--name", b"\xff"],
        [b"pause-queue", b"\xff"],
        [b"reject", b"abc", b"--reason", b"\xff"],
        [b"enqueue", b"record", b"--app", b"tasks:app", b"--args", b'{"n": "\xff"}'],
    ],
)
def test_an_argument_that_is_not_utf8_is_refused_naming_it(
    here: Path, database: str, args: list[bytes]
) -> None:
    app = instar.App(database)
    app.migrate()
    result = subprocess.run(
        [sys.executable.encode(), b"-m", b"instar.cli.main", *args],
        cwd=here,
        env={**os.environ, "INSTAR_DATABASE": database, "COLUMNS": "80"},
        capture_output=True,
        timeout=60,
    )
    stderr = result.stderr.decode("utf-8")
    assert result.returncode == 2, stderr
    assert stderr.count("\n") == 1 and "is not valid UTF-8 (byte 0x" in stderr, stderr
    assert "Traceback" not in stderr
    with app:
        assert app.jobs() == []


def test_an_app_module_that_fails_to_import_is_one_line_naming_where(here: Path) -> None:
    (here / "broken.py").write_text("import instar\n\ndef f(:\n    pass\n")
    (here / "raising.py").write_text(
        "import instar\n\n\ndef start():\n"
        "    raise RuntimeError('no config\\nat all')\n\n\nstart()\n"
    )
    (here / "leaving.py").write_text("import sys\nsys.exit(3)\n")
    (here / "importing.py").write_text("import no_such_dependency_xyz\n")
    one_line_error(
        run(here, None, "worker", "--app", "broken:app"),
        7,
        "cannot import 'broken' for --app 'broken:app': SyntaxError: invalid syntax "
        "(broken.py, line 3)",
    )
    one_line_error(
        run(here, None, "worker", "--app", "raising:app"),
        7,
        "RuntimeError: no config at all (raising.py, line 5)",
    )
    one_line_error(run(here, None, "worker", "--app", "leaving:app"), 7, "called sys.exit(3)")
    one_line_error(
        run(here, None, "worker", "--app", "importing:app"),
        7,
        "ModuleNotFoundError: No module named 'no_such_dependency_xyz' (importing.py, line 1)",
    )
    one_line_error(run(here, None, "worker", "--app", "absent:app"), 7, "no module named 'absent'")


# -- large arguments from a file or standard input ----------------------------------------------


def test_arguments_come_from_a_file_or_standard_input(here: Path, database: str) -> None:
    big = {"path": "p" * 100_000, "width": 3}
    (here / "args.json").write_text(json.dumps(big))
    from_file = run(
        here, database, "enqueue", "resize", "--app", "tasks:app", "--args", "@args.json", "--json"
    )
    assert json.loads(ok(from_file))["args"] == big
    from_stdin = run(
        here, database, "enqueue", "resize", "--app", "tasks:app", "--args", "-", "--json",
        stdin=json.dumps(big),
    )  # fmt: skip
    assert json.loads(ok(from_stdin))["args"] == big
    (here / "latin1.json").write_bytes(b'{"path": "caf\xe9", "width": 1}')
    one_line_error(
        run(here, database, "enqueue", "resize", "--app", "tasks:app", "--args", "@latin1.json"),
        2,
        "--args @latin1.json is not UTF-8 text (byte 0xe9 at offset 13)",
    )


# -- the worker's log ------------------------------------------------------------------------------


def test_the_worker_logs_a_line_as_each_job_starts_and_ends(here: Path, database: str) -> None:
    fine = enqueue(here, database, "record", {"n": 1})
    failing = enqueue(here, database, "boom")
    ran = work(here, database)
    assert ran.returncode == 0, ran.stderr
    log = ran.stderr
    assert re.search(rf"info job {fine} record started \(attempt 1/3\)", log), log
    assert re.search(rf"info job {fine} record completed in \d+\.\d\ds", log), log
    assert re.search(
        rf"error job {failing} boom failed after \d+\.\d\ds \(attempt 1/1\): ValueError: "
        "the upstream service said no",
        log,
    ), log
    assert "worker done: 1 completed, 1 failed, 0 released, 0 refused" in log
    quiet = run(here, database, "worker", "--app", "tasks:app", "--burst", "--quiet")
    assert quiet.stderr.startswith("worker done"), quiet.stderr


def test_the_worker_logs_one_json_object_per_line_with_each_jobs_fields(
    here: Path, database: str
) -> None:
    fine = enqueue(here, database, "record", {"n": 1})
    failing = enqueue(here, database, "boom")
    ran = run(here, database, "worker", "--app", "tasks:app", "--burst", "--log-format", "json")
    assert ran.returncode == 0, ran.stderr
    lines = [json.loads(line) for line in ran.stderr.splitlines()]  # every line is JSON
    by_job = {(line.get("job_id"), line.get("event")): line for line in lines}
    started = by_job[(fine, "started")]
    assert started["level"] == "info" and started["logger"] == "instar.jobs"
    assert (started["job_name"], started["queue"], started["attempt"]) == ("record", "default", 1)
    assert started["worker"] and started["message"] == f"job {fine} record started (attempt 1/3)"
    done = by_job[(fine, "ended")]
    assert done["state"] == "completed" and done["duration_s"] >= 0
    failed = by_job[(failing, "ended")]
    assert (failed["level"], failed["state"], failed["error_type"]) == (
        "error",
        "failed",
        "ValueError",
    )
    assert failed["error_message"].startswith("the upstream service said no")
    assert lines[-1]["message"] == "worker done: 1 completed, 1 failed, 0 released, 0 refused"
    assert all(datetime.fromisoformat(line["time"]).tzinfo for line in lines)


# -- secrets -----------------------------------------------------------------------------


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)  # SQLite URLs hold none
def test_a_password_in_a_database_url_never_appears(here: Path, database: str) -> None:
    with_password = database.replace("postgresql://postgres@", "postgresql://postgres:s3cret@")
    assert with_password != database
    for result in (
        run(here, None, "migrate", "--database", with_password),
        run(here, None, "migrate", "--database", with_password, "--json"),
        run(here, None, "worker", "--app", "tasks:app", "--burst", "--database", with_password),
        run(here, None, "migrate", "--database", "postgresql://postgres:s3cret@127.0.0.1:1/x"),
        run(here, with_password, "jobs", "--database", database),
    ):
        assert "s3cret" not in result.stdout + result.stderr
