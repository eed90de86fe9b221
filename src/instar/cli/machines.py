"""``instar machines``: durable state machines from the command line: register a
TOML definition, create instances, send them events, read their state and
history, roll one back, verify them by replay and draw a machine.

Exit codes are the ones every command uses (``InstarError.exit_code``), and two
of this group's own: a refused event exits 3, like a refused job transition (its
reason and detail on stderr; with ``--json`` the result on stdout too), and
``verify`` exits 1 when any instance does not replay its history.

Guards are Python functions, so a command that needs them takes them from code:
``--guards module:attr`` (a mapping of guard name to function; a bare ``attr``
is looked up in the ``--app`` module), or the machines the ``--app`` module
registers itself when it is imported (each carries its guards).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, cast

import click
from rich.table import Table
from rich.text import Text

from instar.app import App
from instar.cli.common import (
    app_option,
    database_option,
    error_line,
    import_object,
    json_option,
    note_line,
    opened_app,
    out,
    print_json,
    printable,
    read_json,
    reports_errors,
)
from instar.diagram import Format
from instar.display import cell, fields_table
from instar.errors import ConfigurationError, InvalidOption
from instar.human_time import moment
from instar.machines import (
    Definition,
    HistoryEntry,
    Instance,
    InvalidMachine,
    Refusal,
    Verification,
)
from instar.registry.limits import MAX_LIST, check_limit
from instar.vocabulary import Actor

REFUSED_EXIT = 3
"""A refused event: the same code as a refused job transition."""
UNVERIFIED_EXIT = 1
"""``verify``: at least one instance does not replay its history."""
REFUSALS_SHOWN = 10
"""The newest refusals ``show`` prints (each instance keeps up to 100)."""

guards_option = click.option(
    "--guards",
    "guards_ref",
    default=None,
    help=(
        "Guard functions, as module:attribute naming a mapping of guard name to "
        "function (e.g. shop.machines:GUARDS); a bare attribute is looked up in the "
        "--app module."
    ),
)


@click.group()
def machines() -> None:
    """Durable state machines: register, create, send, show, list, history,
    rollback, verify, diagram, definitions.

    A refused event exits 3 and says why (its reason and detail) on stderr;
    verify exits 1 when any instance does not replay its history. Other errors
    exit as every command does: 2 bad option or invalid definition, 3 a conflict,
    4 unknown machine or instance, 6 bad payload, 7 bad configuration.
    """


@machines.command()
@click.argument("file", type=click.Path(dir_okay=False))
@app_option
@database_option
@guards_option
@json_option
@reports_errors
def register(
    file: str, app_ref: str | None, database: str | None, guards_ref: str | None, as_json: bool
) -> None:
    """Check the TOML definition in FILE and keep it in the database (again is
    harmless; a different text under a registered name and version is refused).
    Every problem is listed with its line."""
    with opened_app(database, app_ref) as app:
        guards = _guards(guards_ref, app_ref)
        try:
            definition = app.machines.register_file(file, guards=guards)
        except InvalidMachine as exc:
            if guards is not None or not any(_missing_guard(p) for p in exc.problems):
                raise
            error_line(str(exc))
            note_line(
                "guards are Python functions: pass --guards module:attribute (a mapping "
                "of guard name to function), or --app whose module registers the machine"
            )
            raise SystemExit(exc.exit_code) from None
    if as_json:
        print_json(_definition_json(definition))
        return
    _say(
        f"machine {definition.name} version {definition.version} is registered: "
        f"{len(definition.states)} states, {len(definition.transitions)} transitions"
    )
    for warning in definition.warnings:
        note_line(warning)


@machines.command()
@click.argument("name")
@click.argument("key")
@app_option
@database_option
@click.option(
    "--context",
    "context_json",
    default=None,
    help=(
        "Context values as a JSON object, over the definition's defaults; @FILE reads "
        "them from a file, - from standard input."
    ),
)
@click.option(
    "--version",
    type=click.IntRange(min=1),
    default=None,
    help="Create it under this version of the machine (default: the latest).",
)
@json_option
@reports_errors
def create(
    name: str,
    key: str,
    app_ref: str | None,
    database: str | None,
    context_json: str | None,
    version: int | None,
    as_json: bool,
) -> None:
    """Create instance KEY of machine NAME in its initial state. Entry actions
    that enqueue jobs need --app (the jobs' handlers)."""
    context = _object(context_json, "--context")
    with opened_app(database, app_ref) as app:
        instance = app.machines.create(name, key, context, version=version, actor=Actor.CLI)
    if as_json:
        print_json(instance.as_dict())
    else:
        _say(
            f"{name} {key!r} created in {instance.state} "
            f"(version {instance.version}, seq {instance.seq})"
        )


@machines.command()
@click.argument("name")
@click.argument("key")
@click.argument("event")
@app_option
@database_option
@guards_option
@click.option(
    "--data",
    "data_json",
    default=None,
    help=("The event's data as a JSON object; @FILE reads it from a file, - from standard input."),
)
@click.option(
    "--idempotency-key",
    default=None,
    help="Send at most once per key: a repeat returns the first outcome and changes nothing.",
)
@click.option(
    "--expect-seq",
    type=click.IntRange(min=1),
    default=None,
    help="Only if the instance is still at this seq (exit 3 if another event came first).",
)
@json_option
@reports_errors
def send(
    name: str,
    key: str,
    event: str,
    app_ref: str | None,
    database: str | None,
    guards_ref: str | None,
    data_json: str | None,
    idempotency_key: str | None,
    expect_seq: int | None,
    as_json: bool,
) -> None:
    """Send EVENT to instance KEY of machine NAME. Accepted: the state it is in
    now. Refused: the reason and detail, exit code 3, nothing changed but the
    instance's refusal log. Guarded moves need their guards (--guards or --app)."""
    data = _object(data_json, "--data")
    with opened_app(database, app_ref) as app:
        guards = _guards(guards_ref, app_ref)
        if guards:
            # Guards live in the process: registering the latest definition again
            # (the same text, so nothing is written) hands them to the runtime.
            latest = app.machines.definition(name)
            app.machines.register(dict(latest.raw), guards=guards)
        result = app.machines.send(
            name,
            key,
            event,
            data,
            idempotency_key=idempotency_key,
            expect_seq=expect_seq,
            actor=Actor.CLI,
        )
    if as_json:
        print_json(result.as_dict())
    elif result.accepted:
        _say(f"{name} {key!r}: {event} accepted, now in {result.state} (seq {result.seq})")
    if not result.accepted:
        error_line(
            f"{name} {key!r} refused {event} in {result.state or 'no state'}: "
            f"{result.reason}: {result.detail or 'no detail'}"
        )
        raise SystemExit(REFUSED_EXIT)


@machines.command()
@click.argument("name")
@click.argument("key")
@database_option
@json_option
@reports_errors
def show(name: str, key: str, database: str | None, as_json: bool) -> None:
    """Instance KEY of machine NAME: its state, context and seq, the timers armed
    for it and its newest refusals."""
    with opened_app(database, read_only=True) as app:
        app.machines.definition(name)
        instance = app.machines.get(name, key)
        timers = app.engine.store.timers_of(name, key)
        refusals = app.machines.refusals(name, key, REFUSALS_SHOWN)
        now = datetime.fromtimestamp(app.clock.now(), UTC)
    armed = [(t.state, t.event, datetime.fromtimestamp(t.due_at, UTC)) for t in timers]
    if as_json:
        print_json(
            {
                "instance": instance.as_dict(),
                "timers": [
                    {"state": state, "event": event, "due_at": due.isoformat()}
                    for state, event, due in armed
                ],
                "refusals": [_refusal_json(r) for r in refusals],
            }
        )
        return
    fields: dict[str, Any] = {
        "machine": instance.machine,
        "key": instance.key,
        "version": instance.version,
        "state": instance.state,
        "final": instance.final,
        "seq": instance.seq,
        "context": instance.context,
        "created_at": instance.created_at,
        "updated_at": instance.updated_at,
        "timers": "\n".join(
            f"{event} from {state} at {moment(due, now)}" for state, event, due in armed
        )
        or None,
        "refusals": "\n".join(_refusal_line(r, now) for r in refusals) or None,
    }
    out.print(fields_table(fields, now))


@machines.command("list")
@click.argument("name")
@database_option
@click.option(
    "--state", default=None, help="Only instances in this state (a superstate: any state under it)."
)
@click.option("--after", default=None, help="Only instances whose key sorts after this one.")
@click.option(
    "--limit",
    type=int,
    default=100,
    show_default=True,
    help=f"At most this many (1 to {MAX_LIST:,}).",
)
@json_option
@reports_errors
def list_instances(
    name: str,
    database: str | None,
    state: str | None,
    after: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Instances of machine NAME by key, a page at a time, and how many are in each state."""
    check_limit(limit)
    with opened_app(database, read_only=True) as app:
        definition = app.machines.definition(name)
        counts = app.machines.counts(name)
        if state is not None and state not in definition.states and state not in counts:
            known = ", ".join(definition.states)
            raise InvalidOption(f"--state {state!r} is not a state of {name} (states: {known})")
        fetched = app.machines.instances(name, state, after=after, limit=min(limit + 1, MAX_LIST))
    found = fetched[:limit]
    if as_json:
        print_json({"instances": [i.as_dict() for i in found], "counts": counts})
        return
    if found:
        out.print(_instances_table(found))
    total = counts.get(state, 0) if state is not None else _total(definition, counts)
    out.print(_page_line(name, found, total, state, after, more=len(fetched) > limit))
    if counts:
        out.print()
        out.print(_counts_table(definition, counts))


@machines.command()
@click.argument("name")
@click.argument("key")
@database_option
@click.option(
    "--since-seq",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Only entries after this seq.",
)
@click.option("--last", type=click.IntRange(min=1), default=None, help="Only the last N entries.")
@json_option
@reports_errors
def history(
    name: str,
    key: str,
    database: str | None,
    since_seq: int,
    last: int | None,
    as_json: bool,
) -> None:
    """The history of instance KEY of machine NAME, oldest first: each entry's
    kind, event, move, who sent it and its data."""
    with opened_app(database, read_only=True) as app:
        app.machines.definition(name)
        entries = app.machines.history(name, key, since_seq=since_seq, last=last)
    if as_json:
        print_json([e.as_dict() for e in entries])
        return
    if not entries:
        out.print(Text(f"no entries after seq {since_seq}", style="dim"))
        return
    out.print(_history_table(entries))


@machines.command()
@click.argument("name")
@click.argument("key")
@database_option
@click.option(
    "--to-seq",
    type=click.IntRange(min=1),
    required=True,
    help="The history entry whose state and context to return to.",
)
@click.option("--reason", required=True, help="Why, kept in the history entry it adds.")
@json_option
@reports_errors
def rollback(
    name: str, key: str, database: str | None, to_seq: int, reason: str, as_json: bool
) -> None:
    """Return instance KEY of machine NAME to the state and context recorded at
    --to-seq, as a new history entry (nothing is deleted); the timers of the
    restored states are armed from now, jobs already enqueued stay."""
    with opened_app(database) as app:
        app.machines.definition(name)
        instance = app.machines.rollback(name, key, to_seq=to_seq, reason=reason, actor=Actor.CLI)
    if as_json:
        print_json(instance.as_dict())
    else:
        _say(
            f"{name} {key!r} rolled back to seq {to_seq}: now in {instance.state} "
            f"(seq {instance.seq})"
        )


@machines.command()
@click.argument("name", required=False)
@click.argument("key", required=False)
@click.option("--all", "every", is_flag=True, help="Every instance (of NAME, or of every machine).")
@database_option
@json_option
@reports_errors
def verify(
    name: str | None, key: str | None, every: bool, database: str | None, as_json: bool
) -> None:
    """Replay the history of instance KEY of machine NAME (or --all instances)
    through its definition and compare it with the instance and its timers.
    Exit code 1 when any instance fails, each named with its problems."""
    if every and key is not None:
        raise click.UsageError("verify --all takes at most a machine NAME, not a KEY")
    if not every and (name is None or key is None):
        raise click.UsageError("verify needs NAME KEY, or --all [NAME]")
    with opened_app(database, read_only=True) as app:
        if every:
            if name is not None:
                app.machines.definition(name)
            results = _verify_all(app, name)
        else:
            assert name is not None and key is not None
            app.machines.definition(name)
            results = [app.machines.verify(name, key)]
    failing = [v for v in results if not v.ok]
    if as_json and not every:
        print_json(_verification_json(results[0]))
    elif as_json:
        print_json(
            {
                "ok": not failing,
                "verified": len(results),
                "failing": [_verification_json(v) for v in failing],
            }
        )
    else:
        for verification in failing:
            _say(f"{verification.machine} {verification.key!r} does not replay its history:")
            for problem in verification.problems:
                _say(f"  - {problem}")
        if every:
            _say(
                f"verified {len(results)} instances: {len(results) - len(failing)} ok, "
                f"{len(failing)} failing"
            )
        elif not failing:
            _say(f"{name} {key!r} replays its history: ok")
    if failing:
        names = ", ".join(f"{v.machine} {v.key!r}" for v in failing[:10])
        more = f" and {len(failing) - 10} more" if len(failing) > 10 else ""
        error_line(
            f"{len(failing)} instance{'s' if len(failing) > 1 else ''} "
            f"{'do' if len(failing) > 1 else 'does'} not replay: {names}{more}"
        )
        raise SystemExit(UNVERIFIED_EXIT)


@machines.command()
@click.argument("name")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mermaid", "dot", "table"]),
    default="mermaid",
    show_default=True,
    help="Mermaid (stateDiagram-v2), Graphviz DOT, or a text table.",
)
@click.option("--instance", default=None, help="Highlight where this instance (a KEY) is.")
@click.option(
    "--version",
    type=click.IntRange(min=1),
    default=None,
    help="Draw this version (default: the latest; with --instance, the instance's).",
)
@database_option
@json_option
@reports_errors
def diagram(
    name: str,
    fmt: str,
    instance: str | None,
    version: int | None,
    database: str | None,
    as_json: bool,
) -> None:
    """Draw machine NAME: nested states as composite states, moves labelled with
    their events (--json: the states and their moves as data)."""
    if instance is not None and version is not None:
        raise InvalidOption("--instance draws the instance's own version; leave out --version")
    with opened_app(database, read_only=True) as app:
        if as_json:
            current = None if instance is None else app.machines.get(name, instance)
            if current is not None:
                version = current.version
            definition = app.machines.definition(name, version)
            print_json(_diagram_json(definition, None if current is None else current.state))
            return
        drawn = app.machines.diagram(name, cast(Format, fmt), instance=instance, version=version)
    click.echo(drawn)


@machines.command()
@database_option
@json_option
@reports_errors
def definitions(database: str | None, as_json: bool) -> None:
    """Every machine definition in the database: name, version, when registered."""
    with opened_app(database, read_only=True) as app:
        found = app.engine.store.machine_definitions()
    rows = [
        {
            "name": name,
            "version": version,
            "digest": digest,
            "registered_at": datetime.fromtimestamp(at, UTC).isoformat(),
        }
        for name, version, digest, at in found
    ]
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print("no machine is registered yet: instar machines register FILE")
        return
    table = Table(box=None, pad_edge=False, padding=(0, 1), header_style="bold")
    for column in ("name", "version", "registered (UTC)", "digest"):
        table.add_column(column, no_wrap=column != "name", overflow="fold")
    for name, version, digest, at in found:
        registered = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(Text(name), str(version), registered, digest[:12])
    out.print(table)


COMMANDS: tuple[click.Command, ...] = (machines,)


# -- helpers ---------------------------------------------------------------------------------


def _say(line: str) -> None:
    """One line on stdout, as it is (no markup)."""
    out.print(Text(printable(line)))


def _object(text: str | None, option: str) -> dict[str, Any] | None:
    """A JSON option that must hold an object (None when not given)."""
    if text is None:
        return None
    value = read_json(text, option)
    if not isinstance(value, dict):
        raise InvalidOption(
            f"{option} must be a JSON object, e.g. '{{\"amount\": 120}}', "
            f"not {type(value).__name__}"
        )
    return value


def _missing_guard(problem: str) -> bool:
    """Whether a definition's problem is a guard this process does not have."""
    return "guard '" in problem and " is not registered (registered: " in problem


def _guards(ref: str | None, app_ref: str | None) -> dict[str, Callable[..., Any]] | None:
    """The guard mapping ``--guards`` names (None when not given);
    ``ConfigurationError`` for one that cannot be found or is not a mapping of
    names to functions."""
    if ref is None:
        return None
    if ":" not in ref:
        if app_ref is None:
            raise ConfigurationError(
                f"--guards {ref!r} must look like module:attribute (a bare attribute is "
                "looked up in the --app module, and no --app is given)"
            )
        ref = f"{app_ref.partition(':')[0]}:{ref}"
    found = import_object(ref, "--guards", example="shop.machines:GUARDS")
    if not isinstance(found, Mapping):
        raise ConfigurationError(
            f"--guards {ref!r} is a {type(found).__name__}, not a mapping of guard names "
            "to functions"
        )
    guards: dict[str, Callable[..., Any]] = {}
    for guard_name, fn in found.items():
        if not isinstance(guard_name, str) or not callable(fn):
            raise ConfigurationError(
                f"--guards {ref!r}: {guard_name!r} maps to {type(fn).__name__}; "
                "every guard name must map to a function"
            )
        guards[guard_name] = fn
    return guards


def _verify_all(app: App, name: str | None) -> list[Verification]:
    """Every instance of ``name`` (None: of every machine) verified; one that
    cannot even be replayed fails with the reason, and the others go on."""
    names = [name] if name is not None else sorted({n for n, _ in app.machines.definitions()})
    results: list[Verification] = []
    for machine in names:
        for instance in app.machines.instances(machine):
            try:
                results.append(app.machines.verify(machine, instance.key))
            except Exception as exc:  # a damaged record is a finding, not a crash
                problem = f"cannot be replayed: {type(exc).__name__}: {exc}"
                results.append(Verification(machine, instance.key, False, [problem]))
    return results


def _definition_json(definition: Definition) -> dict[str, Any]:
    return {
        "name": definition.name,
        "version": definition.version,
        "digest": definition.digest,
        "initial": definition.initial,
        "states": list(definition.states),
        "events": sorted({t.event for t in definition.transitions}),
        "transitions": len(definition.transitions),
        "guards": sorted(definition.guards),
        "warnings": list(definition.warnings),
    }


def _diagram_json(definition: Definition, current: str | None) -> dict[str, Any]:
    """The machine as data: each state (compound ones too) with its parent,
    whether instances start or end in it, and where each event written on it
    leads; ``current``: where the instance asked about is."""
    table = definition.table()
    return {
        "name": definition.name,
        "version": definition.version,
        "current": current,
        "states": [
            {
                "state": state,
                "parent": table.parents.get(state),
                "entry": state in table.entry,
                "final": state in table.final,
                "moves_to": [
                    {"state": target, "events": table.labels[(state, target)].split(", ")}
                    for target in table.targets(state)
                ],
            }
            for state in table.states
        ],
    }


def _refusal_json(refusal: Refusal) -> dict[str, Any]:
    return {
        "at": refusal.at.isoformat(),
        "event": refusal.event,
        "state": refusal.state,
        "reason": refusal.reason,
        "detail": refusal.detail,
        "actor": refusal.actor,
    }


def _refusal_line(refusal: Refusal, now: datetime) -> str:
    """``pay in placed: condition_false: … · cli · 2030-01-01 09:00:00.000 UTC (3s ago)``."""
    said = f"{refusal.event} in {refusal.state or '-'}: {refusal.reason}"
    if refusal.detail:
        said += f": {refusal.detail}"
    return " · ".join(part for part in (said, refusal.actor, moment(refusal.at, now)) if part)


def _verification_json(verification: Verification) -> dict[str, Any]:
    return {
        "machine": verification.machine,
        "key": verification.key,
        "ok": verification.ok,
        "problems": list(verification.problems),
    }


def _instances_table(found: list[Instance]) -> Table:
    table = Table(box=None, pad_edge=False, padding=(0, 1), header_style="bold")
    table.add_column("key", overflow="fold", ratio=1)
    table.add_column("state", overflow="fold", ratio=1)
    table.add_column("seq", justify="right", no_wrap=True)
    table.add_column("v", justify="right", no_wrap=True)
    table.add_column("updated (UTC)", no_wrap=True)
    for instance in found:
        state = Text(instance.state, style="bold" if instance.final else "")
        if instance.final:
            state.append(" (final)", style="dim")
        table.add_row(
            Text(printable(instance.key)),
            state,
            str(instance.seq),
            str(instance.version),
            instance.updated_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        )
    return table


def _total(definition: Definition, counts: Mapping[str, int]) -> int:
    """All instances: each counted once, under its outermost state (a state only
    an older version has stands alone in ``counts``)."""
    return sum(
        n
        for state, n in counts.items()
        if state not in definition.states or definition.states[state].parent is None
    )


def _counts_table(definition: Definition, counts: Mapping[str, int]) -> Table:
    """Instances per state, in the definition's order; a superstate counts the
    states under it (states only older versions have come last)."""
    table = Table(box=None, pad_edge=False, padding=(0, 1), header_style="bold")
    table.add_column("state", overflow="fold")
    table.add_column("instances", justify="right", no_wrap=True)
    ordered = [s for s in definition.states if s in counts]
    ordered += sorted(s for s in counts if s not in definition.states)
    for state in ordered:
        depth = state.count(".")
        table.add_row(Text("  " * depth + state.rsplit(".", 1)[-1]), f"{counts[state]:,}")
    return table


def _page_line(
    name: str,
    found: list[Instance],
    total: int,
    state: str | None,
    after: str | None,
    *,
    more: bool,
) -> Text:
    """``showing 100 of 2,000 instances in paid; next page: instar machines list …``."""
    where = f" in {state}" if state is not None else ""
    past = f" after {after!r}" if after is not None else ""
    if not found:
        return Text(f"no instances of {name}{where}{past}", style="dim")
    line = f"showing {len(found):,} of {total:,} instances of {name}{where}{past}"
    if more:
        options = f" --state {shlex.quote(state)}" if state is not None else ""
        line += (
            f"; next page: instar machines list {shlex.quote(name)}{options} "
            f"--after {shlex.quote(found[-1].key)}"
        )
    return Text(printable(line), style="dim")


def _history_table(entries: list[HistoryEntry]) -> Table:
    """One row per entry: seq, time, kind, event, the move, who, and the data or detail."""
    days = {e.at.astimezone(UTC).date() for e in entries}
    stamp = "%m-%d %H:%M:%S.%f" if len(days) > 1 else "%H:%M:%S.%f"
    table = Table(
        box=None,
        pad_edge=False,
        padding=(0, 1),
        header_style="bold",
        title=f"history ({min(days).isoformat()} UTC)",
        title_justify="left",
        title_style="bold",
    )
    table.add_column("seq", justify="right", no_wrap=True)
    table.add_column("at", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("event", overflow="fold")
    table.add_column("move", overflow="fold", ratio=1)
    table.add_column("by", overflow="fold")
    table.add_column("data, detail", overflow="fold", ratio=1)
    for entry in entries:
        move = (
            entry.to_state
            if entry.from_state is None
            else (f"{entry.from_state} -> {entry.to_state}")
        )
        said = [cell(x) for x in (entry.data, entry.detail) if x]
        table.add_row(
            str(entry.seq),
            entry.at.astimezone(UTC).strftime(stamp)[:-3],
            entry.kind,
            Text(entry.event or ""),
            Text(move),
            Text(printable(entry.actor or "")),
            Text(printable(" ".join(said))),
        )
    return table
