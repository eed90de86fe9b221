"""``instar machines``, run as a subprocess the way a user runs it, on both backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import instar
from instar.cli.main import cli
from tests.conftest import execute_raw
from tests.machines_app import GUARDS

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.machines_app:app"

TICKET = """\
[machine]
name = "ticket"
version = 1
initial = "open"

[context]
priority = 0
key = ""

[events.escalate]
data = { level = "number" }

[states.open]
after = [{ delay = "1h", event = "stale" }]

[states.working]
initial = "triage"

[states.working.states.triage]

[states.working.states.fixing]
enter = [{ enqueue = "ticket.notify", args = { ticket = { context = "key" }, \
priority = { context = "priority" } } }]

[states.closed]
final = true

[[transitions]]
from = "open"
on = "start"
to = "working"
guard = "staffed"

[[transitions]]
from = "open"
on = "stale"
to = "closed"

[[transitions]]
from = "working.triage"
on = "escalate"
to = "working.fixing"
when = { event = "level", ge = 2 }
set = { priority = { event = "level" } }

[[transitions]]
from = "working"
on = "close"
to = "closed"
"""


def instar_cli(*args: str, database: str) -> subprocess.CompletedProcess[str]:
    """``instar ARGS`` on ``database`` (by $INSTAR_DATABASE), from the repository's root."""
    return subprocess.run(
        [sys.executable, "-m", "instar.cli.main", *args],
        cwd=ROOT,
        env={**os.environ, "INSTAR_DATABASE": database},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def ticket_file(tmp_path: Path) -> Path:
    path = tmp_path / "ticket.toml"
    path.write_text(TICKET)
    return path


def test_an_instance_lives_its_life_from_the_command_line(database: str, ticket_file: Path) -> None:
    registered = instar_cli(
        "machines", "register", str(ticket_file), "--app", APP, "--guards", "GUARDS", "--json",
        database=database,
    )  # fmt: skip
    assert registered.returncode == 0, registered.stderr
    assert json.loads(registered.stdout)["name"] == "ticket"
    assert json.loads(registered.stdout)["guards"] == ["staffed"]

    made = instar_cli(
        "machines", "create", "ticket", "T-1", "--context", '{"priority": 1, "key": "T-1"}',
        "--json", database=database,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert (json.loads(made.stdout)["state"], json.loads(made.stdout)["seq"]) == ("open", 1)
    with instar.App(database) as app:
        # Text that looks like markup prints as it is.
        app.machines.create("ticket", "[/T-2]", {"note": "[bold]urgent[/]"})

    # A guard that says no: refused, exit 3, the reason and detail on stderr.
    said_no = instar_cli(
        "machines", "send", "ticket", "T-1", "start", "--data", '{"staff": false}',
        "--app", APP, "--guards", "GUARDS", database=database,
    )  # fmt: skip
    assert said_no.returncode == 3
    assert "refused start in open: guard_false: guard 'staffed'" in said_no.stderr
    assert said_no.stdout == ""

    started = instar_cli(
        "machines", "send", "ticket", "T-1", "start", "--guards", "tests.machines_app:GUARDS",
        "--idempotency-key", "start-1", "--json", database=database,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout) == {
        "accepted": True, "state": "working.triage", "seq": 2, "reason": None, "detail": None,
    }  # fmt: skip

    too_low = instar_cli(
        "machines", "send", "ticket", "T-1", "escalate", "--data", '{"level": 1}', "--json",
        database=database,
    )  # fmt: skip
    assert too_low.returncode == 3
    assert json.loads(too_low.stdout)["reason"] == "condition_false"
    assert "refused escalate in working.triage: condition_false" in too_low.stderr

    # Entering working.fixing enqueues ticket.notify: the job's handler comes from --app.
    escalated = instar_cli(
        "machines", "send", "ticket", "T-1", "escalate", "--data", '{"level": 3}',
        "--expect-seq", "2", "--app", APP, database=database,
    )  # fmt: skip
    assert escalated.returncode == 0, escalated.stderr
    assert "escalate accepted, now in working.fixing (seq 3)" in escalated.stdout
    with instar.App(database) as app:
        [job] = app.jobs(name="ticket.notify")
    assert job.args == {"ticket": "T-1", "priority": 3}

    shown = json.loads(
        instar_cli("machines", "show", "ticket", "T-1", "--json", database=database).stdout
    )
    assert shown["instance"]["state"] == "working.fixing"
    assert shown["instance"]["context"] == {"priority": 3, "key": "T-1"}
    assert shown["timers"] == []
    assert [r["reason"] for r in shown["refusals"]] == ["condition_false", "guard_false"]
    assert shown["refusals"][0]["actor"] == "cli"
    waiting = instar_cli("machines", "show", "ticket", "[/T-2]", database=database)
    assert waiting.returncode == 0, waiting.stderr
    assert "stale from open at" in waiting.stdout  # its armed timer
    assert '"note": "[bold]urgent[/]"' in waiting.stdout

    working = instar_cli(
        "machines", "list", "ticket", "--state", "working", "--json", database=database
    )
    listed = json.loads(working.stdout)
    assert [i["key"] for i in listed["instances"]] == ["T-1"]
    assert listed["counts"] == {"open": 1, "working": 1, "working.fixing": 1}
    table = instar_cli("machines", "list", "ticket", database=database).stdout
    assert "T-1" in table and "[/T-2]" in table and "showing 2 of 2 instances" in table

    entries = json.loads(
        instar_cli("machines", "history", "ticket", "T-1", "--json", database=database).stdout
    )
    assert [(e["kind"], e["event"], e["to_state"]) for e in entries] == [
        ("created", None, "open"),
        ("event", "start", "working.triage"),
        ("event", "escalate", "working.fixing"),
    ]
    assert {e["actor"] for e in entries} == {"cli"}

    rolled = instar_cli(
        "machines", "rollback", "ticket", "T-1", "--to-seq", "2",
        "--reason", "escalated by mistake", database=database,
    )  # fmt: skip
    assert rolled.returncode == 0, rolled.stderr
    assert "rolled back to seq 2: now in working.triage (seq 4)" in rolled.stdout
    with instar.App(database) as app:
        [last] = app.machines.history("ticket", "T-1", last=1)
    assert (last.kind, last.context["priority"]) == ("rolled_back", 1)
    assert last.detail == {"to_seq": 2, "reason": "escalated by mistake"}

    verified = instar_cli("machines", "verify", "ticket", "T-1", database=database)
    assert verified.returncode == 0, verified.stderr
    assert "ticket 'T-1' replays its history: ok" in verified.stdout


def test_verify_all_names_each_instance_whose_history_was_tampered_with(
    database: str,
) -> None:
    with instar.App(database) as app:
        app.machines.register_text(TICKET, guards=GUARDS)
        for key in ("T-1", "T-2", "T-3"):
            app.machines.create("ticket", key, {"key": key})
            app.machines.send("ticket", key, "start")
    execute_raw(
        database,
        "UPDATE machine_history SET to_state = ? WHERE machine = ? AND key = ? AND seq = ?",
        ("working.fixing", "ticket", "T-2", 2),
    )

    found = instar_cli("machines", "verify", "--all", database=database)
    assert found.returncode == 1
    assert "ticket 'T-2' does not replay its history:" in found.stdout
    assert "seq 2: replay ends in working.triage, the record says working.fixing" in found.stdout
    assert "T-1" not in found.stdout and "T-3" not in found.stdout
    assert "verified 3 instances: 2 ok, 1 failing" in found.stdout
    assert "1 instance does not replay: ticket 'T-2'" in found.stderr

    as_json = instar_cli("machines", "verify", "--all", "ticket", "--json", database=database)
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert (report["ok"], report["verified"]) == (False, 3)
    assert [f["key"] for f in report["failing"]] == ["T-2"]
    assert report["failing"][0]["problems"]


def test_a_machine_is_drawn_and_its_definitions_listed(database: str) -> None:
    with instar.App(database) as app:
        app.machines.register_text(TICKET, guards=GUARDS)
        app.machines.create("ticket", "T-1", {"key": "T-1"})

    drawn = instar_cli("machines", "diagram", "ticket", "--instance", "T-1", database=database)
    assert drawn.returncode == 0, drawn.stderr
    lines = drawn.stdout.splitlines()
    assert lines[0] == "stateDiagram-v2"
    assert "    open --> working : start" in lines
    assert "    working__triage --> working__fixing : escalate" in lines
    assert "    class open current" in lines

    as_data = json.loads(
        instar_cli("machines", "diagram", "ticket", "--json", database=database).stdout
    )
    states = {s["state"]: s for s in as_data["states"]}
    assert states["open"]["entry"] and states["closed"]["final"]
    assert states["working.fixing"]["parent"] == "working"
    assert {"state": "working", "events": ["start"]} in states["open"]["moves_to"]

    listed = instar_cli("machines", "definitions", "--json", database=database)
    assert [(d["name"], d["version"]) for d in json.loads(listed.stdout)] == [("ticket", 1)]


def test_bad_input_gets_a_clear_error_and_changes_nothing(database: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text('[machine]\nname = "broken"\nversion = 1\ninitial = \n')
    not_toml = instar_cli("machines", "register", str(broken), database=database)
    assert not_toml.returncode == 2
    assert "broken.toml: not valid TOML" in not_toml.stderr
    assert "line 4" in not_toml.stderr

    wrong = tmp_path / "wrong.toml"
    wrong.write_text(TICKET.replace('to = "closed"\n', 'to = "shut"\n', 1))
    invalid = instar_cli("machines", "register", str(wrong), database=database)
    assert invalid.returncode == 2
    assert "machine 'ticket' is invalid (2 problems)" in invalid.stderr
    lines = TICKET.splitlines()
    start = lines.index('on = "start"')
    first, second = (lines.index("[[transitions]]", at) + 1 for at in (start - 3, start))
    assert f"wrong.toml:{first}: transitions.0: guard 'staffed' is not registered" in (
        invalid.stderr
    )
    assert f"wrong.toml:{second}: transitions.1" in invalid.stderr
    assert "'shut'" in invalid.stderr
    assert "note: guards are Python functions: pass --guards" in invalid.stderr

    unknown = instar_cli("machines", "create", "ticket", "T-1", database=database)
    assert unknown.returncode == 4
    assert "no machine 'ticket' is registered" in unknown.stderr

    with instar.App(database) as app:
        app.machines.register_text(TICKET, guards=GUARDS)
        app.machines.create("ticket", "T-1")
    bad_data = instar_cli(
        "machines", "send", "ticket", "T-1", "start", "--data", "{staff: no}", database=database
    )
    assert bad_data.returncode == 2
    assert "error: --data is not valid JSON" in bad_data.stderr

    stale = instar_cli(
        "machines", "send", "ticket", "T-1", "close", "--expect-seq", "7", database=database
    )
    assert stale.returncode == 3
    assert "is at seq 1, not 7" in stale.stderr
    with instar.App(database) as app:
        assert app.machines.get("ticket", "T-1").seq == 1
        assert app.machines.refusals("ticket", "T-1") == []


def test_every_machines_command_has_help() -> None:
    runner = CliRunner()
    group = cli.get_command(click.Context(cli), "machines")
    assert isinstance(group, click.Group)
    for name, command in group.commands.items():
        assert command.help, name
        result = runner.invoke(cli, ["machines", name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage:" in result.output
    overview = runner.invoke(cli, ["machines", "--help"])
    assert "A refused event exits 3" in overview.output
