"""A durable machine's definition: compiled from one format, checked at once.

Both ways of writing a machine (the Python builder, ``instar.machines.builder``,
and TOML, ``instar.machines.toml_format``) produce the same *raw* form: the
TOML document as plain JSON data (``[machine]``, ``[context]``,
``[events.*]``, ``[states.*]`` with nested ``states``, ``[[transitions]]``).
``compile_definition`` turns it into a ``Definition`` and lists every problem
it has, each with where it is (file and line for TOML, the state path or the
transition's number). The raw form is what the database keeps: a definition
read back compiles the same way, and its digest decides whether a
``(name, version)`` registered again is the same text.

Nothing in a definition is evaluated: values are literals or paths into the
context or the event's data, conditions come from a fixed set of operators,
and a guard is a name looked up in a registry of Python functions.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from instar.errors import InvalidMachine, InvalidOption
from instar.table import TransitionTable

MAX_STATES = 1_000
"""States in one machine: a definition is read whole on every send."""
MAX_DEPTH = 16
"""Levels of nesting (``a.b.c`` is 3)."""
MAX_TRANSITIONS = 5_000
MAX_ACTIONS = 32
"""Entry or exit actions of one state."""
MAX_DELAY_MS = 366 * 86_400_000
"""The longest ``after`` delay: a year and a day."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
"""A state's or an event's name: ASCII letters, digits, ``_`` and ``-`` (a dot
separates a path's parts; look-alike Unicode letters are refused, so that two
names that print alike are the same name)."""
_MACHINE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}")
_GUARD = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,127}")
_FIELD = re.compile(r"[^.\s]{1,128}(\.[^.\s]{1,128}){0,31}")
"""A context or event path: dotted keys (a digit indexes a list)."""
_DURATION = re.compile(r"(\d{1,12})(ms|s|m|h|d)")
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}

JSON_TYPES: Mapping[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
    "any": lambda v: True,
}
"""The types an event's payload schema may name, field by field."""

OPERATORS = ("eq", "ne", "lt", "le", "gt", "ge", "in", "exists")

Source = Literal["literal", "context", "event"]


# -- the compiled form -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Value:
    """A literal, or a path into the instance's context or the event's data."""

    source: Source
    path: tuple[str, ...] = ()
    literal: Any = None


@dataclass(frozen=True, slots=True)
class Comparison:
    """``left op right``: ``left`` is a context or event path; ``right`` a value
    (for ``exists``, a literal true or false)."""

    left: Value
    op: str
    right: Value


@dataclass(frozen=True, slots=True)
class Enqueue:
    """Enqueue the registered job ``job`` with ``args``; when it completes, its
    result is sent to this instance as the event ``reply``, if any."""

    job: str
    args: Mapping[str, Value]
    reply: str | None


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``event`` with ``data`` to the instance ``key`` of ``machine``."""

    machine: str
    key: Value
    event: str
    data: Mapping[str, Value]


Action = Enqueue | Send


@dataclass(frozen=True, slots=True)
class Timer:
    """An ``after`` timer: ``event`` is sent once the state has been active
    ``delay_ms`` milliseconds."""

    delay_ms: int
    event: str


@dataclass(frozen=True, slots=True)
class StateDef:
    path: str
    parent: str | None
    initial: str | None
    """A compound state's initial child (its full path); None for a leaf."""
    final: bool
    after: tuple[Timer, ...]
    enter: tuple[Action, ...]
    exit: tuple[Action, ...]
    children: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Transition:
    index: int
    sources: tuple[str, ...]
    event: str
    target: str
    when: tuple[Comparison, ...]
    guard: str | None
    set: Mapping[str, Value]
    add: Mapping[str, Value]
    unset: tuple[str, ...]


@dataclass(frozen=True)
class Definition:
    """A compiled machine. ``raw`` is the form it was compiled from (kept in
    the database); ``digest`` its SHA-256 over canonical JSON."""

    name: str
    version: int
    initial: str
    context: Mapping[str, Any]
    events: Mapping[str, Mapping[str, str]]
    states: Mapping[str, StateDef]
    transitions: tuple[Transition, ...]
    raw: Mapping[str, Any]
    digest: str
    warnings: tuple[str, ...] = ()
    guards: frozenset[str] = field(default_factory=frozenset)
    by_event: Mapping[tuple[str, str], tuple[Transition, ...]] = field(default_factory=dict)
    """(source path, event) -> its transitions in definition order."""

    def leaf(self, path: str) -> str:
        """The leaf a move into ``path`` ends in: down its initial children."""
        state = self.states[path]
        while state.initial is not None:
            state = self.states[state.initial]
        return state.path

    def lineage(self, path: str) -> list[str]:
        """``path`` and its ancestors, innermost first."""
        out = []
        current: str | None = path
        while current is not None:
            out.append(current)
            current = self.states[current].parent
        return out

    def table(self) -> TransitionTable[str]:
        """Every state (compound ones too) and the moves written, for diagrams."""
        moves: dict[str, set[str]] = {path: set() for path in self.states}
        labels: dict[tuple[str, str], list[str]] = {}
        for t in self.transitions:
            for source in t.sources:
                moves[source].add(t.target)
                labels.setdefault((source, t.target), []).append(t.event)
        return TransitionTable(
            name=self.name,
            states=tuple(self.states),
            transitions={s: frozenset(v) for s, v in moves.items()},
            entry=frozenset({self.initial}),
            final=frozenset(p for p, s in self.states.items() if s.final),
            parents={p: s.parent for p, s in self.states.items() if s.parent is not None},
            initial_children={p: s.initial for p, s in self.states.items() if s.initial},
            labels={k: ", ".join(v) for k, v in labels.items()},
        )

    def leaf_table(self) -> TransitionTable[str]:
        """The leaves and where each event can take them: what an instance can
        actually be in, for the reachability checks."""
        leaves = [p for p, s in self.states.items() if not s.children]
        moves: dict[str, set[str]] = {leaf: set() for leaf in leaves}
        for leaf in leaves:
            if self.states[leaf].final:
                continue  # an instance in a final state takes no event, its ancestors' neither
            for ancestor in self.lineage(leaf):
                for t in self.transitions:
                    if ancestor in t.sources:
                        moves[leaf].add(self.leaf(t.target))
        return TransitionTable(
            name=self.name,
            states=tuple(leaves),
            transitions={s: frozenset(v) for s, v in moves.items()},
            entry=frozenset({self.leaf(self.initial)}),
            final=frozenset(p for p in leaves if self.states[p].final),
        )


def check_machine_name(name: object) -> str:
    """A machine's name as a caller passes it; ``InvalidOption`` otherwise."""
    if not isinstance(name, str) or not _MACHINE.fullmatch(name):
        raise InvalidOption(
            f"machine name {_shown(name)} must be 1 to 128 ASCII letters, digits, '_', '-' "
            "or '.', starting with a letter or '_'"
        )
    return name


def check_event(name: object) -> str:
    """An event's name as a caller passes it; ``InvalidOption`` otherwise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidOption(f"event name {_shown(name)} {_NAME_RULE}")
    return name


def digest_of(raw: Mapping[str, Any]) -> str:
    text = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def parse_delay(text: object) -> int | None:
    """Milliseconds in ``\\d+(ms|s|m|h|d)``, or None when ``text`` is not one."""
    if not isinstance(text, str):
        return None
    match = _DURATION.fullmatch(text)
    if match is None:
        return None
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


# -- compiling -----------------------------------------------------------------------------


Locate = Callable[[str], str]
"""Where a part of the raw form is written ("machines/order.toml:12"), from
its key ("states.fulfilment", "transitions.3", "machine")."""


class _Problems:
    def __init__(self, locate: Locate) -> None:
        self.locate = locate
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def add(self, where: str, message: str, *, warning: bool = False) -> None:
        located = self.locate(where)
        text = f"{located}: {message}" if located else message
        (self.warnings if warning else self.errors).append(text)


def compile_definition(
    raw: Mapping[str, Any],
    *,
    locate: Locate | None = None,
    guards: Collection[str] | None = None,
    jobs: Callable[[str], bool] | None = None,
) -> Definition:
    """``raw`` compiled, or ``InvalidMachine`` listing every problem at once.

    ``guards``: the guard names registered (None: not checked, as when a
    definition is read back from the database). ``jobs``: whether a job name
    is registered (None: not checked)."""
    out = _Problems(locate or (lambda where: where))
    name = _machine_header(raw, out)
    version = raw.get("machine", {}).get("version") if isinstance(raw.get("machine"), dict) else 0
    _only(raw, {"machine", "context", "events", "states", "transitions"}, "", out)
    context = _context(raw.get("context", {}), out)
    events = _events(raw.get("events", {}), out)
    states = _states(raw.get("states"), out)
    initial = _initial(raw, states, out)
    transitions = _transitions(raw.get("transitions", []), states, events, out)
    _actions_and_guards(states, transitions, guards, jobs, out)
    if not out.errors:
        _reachability(name, initial, states, transitions, out)
    if out.errors:
        raise InvalidMachine(name or "?", out.errors)
    by_event: dict[tuple[str, str], list[Transition]] = {}
    for t in transitions:
        for source in t.sources:
            by_event.setdefault((source, t.event), []).append(t)
    assert isinstance(version, int) and initial is not None
    return Definition(
        name=name,
        version=version,
        initial=initial,
        context=context,
        events=events,
        states=states,
        transitions=tuple(transitions),
        raw=raw,
        digest=digest_of(raw),
        warnings=tuple(out.warnings),
        guards=frozenset(t.guard for t in transitions if t.guard),
        by_event={k: tuple(v) for k, v in by_event.items()},
    )


def _only(table: object, allowed: set[str], where: str, out: _Problems) -> None:
    if isinstance(table, dict):
        for key in table:
            if key not in allowed:
                listed = ", ".join(sorted(allowed))
                out.add(where or str(key), f"unknown key {key!r}; the keys here are {listed}")


def _machine_header(raw: Mapping[str, Any], out: _Problems) -> str:
    header = raw.get("machine")
    if not isinstance(header, dict):
        out.add("machine", "a [machine] table with name and version is required")
        return ""
    _only(header, {"name", "version", "initial"}, "machine", out)
    name = header.get("name")
    if not isinstance(name, str) or not _MACHINE.fullmatch(name):
        out.add(
            "machine",
            f"name must be 1 to 128 ASCII letters, digits, '_', '-' or '.', starting with "
            f"a letter or '_', not {_shown(name)}",
        )
        name = ""
    version = header.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= 2**31:
        out.add("machine", f"version must be a whole number from 1, not {_shown(version)}")
    return str(name)


def _context(context: object, out: _Problems) -> dict[str, Any]:
    if not isinstance(context, dict):
        out.add("context", "[context] must be a table of JSON values")
        return {}
    problem = _json_problem(context)
    if problem:
        out.add("context", problem)
    return dict(context)


def _json_problem(value: object, at: str = "") -> str | None:
    """Why ``value`` is not plain JSON (a TOML date, NaN), or None."""
    if isinstance(value, dict):
        for key, item in value.items():
            found = _json_problem(item, f"{at}.{key}" if at else str(key))
            if found:
                return found
        return None
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _json_problem(item, f"{at}[{index}]")
            if found:
                return found
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{at or 'a value'} is {value}, which JSON cannot hold"
    if value is None or isinstance(value, str | int | float | bool):
        return None
    return f"{at or 'a value'} is a {type(value).__name__}; only JSON values are allowed"


def _events(events: object, out: _Problems) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    if not isinstance(events, dict):
        out.add("events", "[events] must be a table of event names")
        return found
    for name, spec in events.items():
        where = f"events.{name}"
        if not _NAME.fullmatch(str(name)):
            out.add(where, f"event name {_shown(name)} {_NAME_RULE}")
            continue
        if not isinstance(spec, dict):
            out.add(where, "an event's entry must be a table")
            continue
        _only(spec, {"data"}, where, out)
        data = spec.get("data", {})
        if not isinstance(data, dict):
            out.add(where, "data must be a table of field = type")
            continue
        fields = {}
        for key, kind in data.items():
            if kind not in JSON_TYPES:
                out.add(
                    where,
                    f"field {_shown(key)} has type {_shown(kind)}; the types are "
                    + ", ".join(JSON_TYPES),
                )
            else:
                fields[str(key)] = str(kind)
        found[str(name)] = fields
    return found


_NAME_RULE = (
    "must be 1 to 64 ASCII letters, digits, '_' or '-', starting with a letter or '_' "
    "(a dot separates the parts of a state path)"
)
_STATE_KEYS = {"initial", "final", "after", "enter", "exit", "states"}


def _states(tree: object, out: _Problems) -> dict[str, StateDef]:
    """Every state by path, parents before children, in the order written."""
    if not isinstance(tree, dict) or not tree:
        out.add("states", "at least one state is required under [states]")
        return {}
    found: dict[str, StateDef] = {}
    pending: list[tuple[str | None, str, object, int]] = [
        (None, str(k), v, 1) for k, v in tree.items()
    ]
    pending.reverse()
    count = 0
    order: list[tuple[str, str | None, dict[str, Any], list[str]]] = []
    while pending:
        parent, name, spec, depth = pending.pop()
        path = name if parent is None else f"{parent}.{name}"
        where = f"states.{path}"
        if not _NAME.fullmatch(name):
            out.add(where, f"state name {_shown(name)} {_NAME_RULE}")
            continue
        if depth > MAX_DEPTH:
            out.add(where, f"states nest {MAX_DEPTH} deep at most; this one is deeper")
            continue
        count += 1
        if count > MAX_STATES:
            out.add("states", f"a machine has at most {MAX_STATES:,} states; this one has more")
            return {}
        if not isinstance(spec, dict):
            out.add(where, "a state must be a table")
            continue
        _only(spec, _STATE_KEYS, where, out)
        children = spec.get("states", {})
        if not isinstance(children, dict):
            out.add(where, "states must be a table of child states")
            children = {}
        names = [str(c) for c in children]
        order.append((path, parent, spec, names))
        pending.extend((path, str(c), children[c], depth + 1) for c in reversed(list(children)))
    for path, parent, spec, names in order:
        where = f"states.{path}"
        kids = tuple(f"{path}.{n}" for n in names if _NAME.fullmatch(n))
        final = spec.get("final", False)
        if not isinstance(final, bool):
            out.add(where, f"final must be true or false, not {_shown(final)}")
            final = False
        initial = spec.get("initial")
        if isinstance(initial, bool):  # `initial = true` marks a top-level start state
            initial = None
        child_initial: str | None = None
        if kids:
            if initial is None:
                out.add(where, 'a compound state needs an initial child (initial = "name")')
            elif not isinstance(initial, str):
                out.add(where, f"initial must name a child state, not {_shown(initial)}")
            else:
                full = initial if initial.startswith(f"{path}.") else f"{path}.{initial}"
                if full not in kids:
                    out.add(
                        where,
                        f"initial {_shown(initial)} is not a child of {path} "
                        f"(its children: {', '.join(n for n in names)})",
                    )
                else:
                    child_initial = full
            if final:
                out.add(where, "a final state cannot have child states")
        elif isinstance(initial, str):
            out.add(where, f"initial {_shown(initial)} given, but {path} has no child states")
        after = _timers(spec.get("after", []), where, out)
        if final and after:
            out.add(where, "a final state cannot have after timers: nothing leaves it")
        enter = _actions(spec.get("enter", []), f"{where}.enter", out)
        exit_ = _actions(spec.get("exit", []), f"{where}.exit", out)
        found[path] = StateDef(path, parent, child_initial, final, after, enter, exit_, kids)
    return found


def _timers(value: object, where: str, out: _Problems) -> tuple[Timer, ...]:
    if not isinstance(value, list):
        out.add(where, 'after must be a list of { delay = "30m", event = "name" }')
        return ()
    timers = []
    for item in value:
        if not isinstance(item, dict):
            out.add(where, "each after entry must be a table { delay, event }")
            continue
        _only(item, {"delay", "event"}, where, out)
        delay = parse_delay(item.get("delay"))
        event = item.get("event")
        if delay is None or not 1 <= delay <= MAX_DELAY_MS:
            out.add(
                where,
                f"delay {_shown(item.get('delay'))} is not a duration such as 500ms, 30s, "
                "30m, 2h or 7d (from 1ms to 366d)",
            )
        elif not isinstance(event, str) or not _NAME.fullmatch(event):
            out.add(where, f"after event {_shown(event)} {_NAME_RULE}")
        else:
            timers.append(Timer(delay, event))
    return tuple(timers)


def _value(spec: object, where: str, out: _Problems) -> Value:
    """``{ context = "path" }``, ``{ event = "path" }``, ``{ literal = x }`` or a literal."""
    if isinstance(spec, dict) and len(spec) == 1:
        ((source, path),) = spec.items()
        if source in ("context", "event"):
            if not isinstance(path, str) or not _FIELD.fullmatch(path):
                out.add(where, f"{source} path {_shown(path)} is not a dotted path of keys")
                return Value("literal")
            return Value(source, tuple(path.split(".")))
        if source == "literal":
            problem = _json_problem(path)
            if problem:
                out.add(where, problem)
            return Value("literal", literal=path)
    problem = _json_problem(spec)
    if problem:
        out.add(where, problem)
    if isinstance(spec, dict):
        out.add(
            where,
            'a table value must be { context = "path" }, { event = "path" } or { literal = ... }',
        )
    return Value("literal", literal=spec)


def _values(spec: object, where: str, out: _Problems) -> dict[str, Value]:
    if not isinstance(spec, dict):
        out.add(where, "must be a table of key = value")
        return {}
    return {str(k): _value(v, f"{where}", out) for k, v in spec.items()}


def _actions(value: object, where: str, out: _Problems) -> tuple[Action, ...]:
    if not isinstance(value, list):
        out.add(where, "must be a list of actions ({ enqueue = ... } or { send = ... })")
        return ()
    if len(value) > MAX_ACTIONS:
        out.add(where, f"at most {MAX_ACTIONS} actions per state and moment")
        return ()
    actions: list[Action] = []
    for item in value:
        if not isinstance(item, dict) or ("enqueue" in item) == ("send" in item):
            out.add(where, 'an action is a table with either enqueue = "job" or send = "event"')
            continue
        if "enqueue" in item:
            _only(item, {"enqueue", "args", "reply"}, where, out)
            job, reply = item["enqueue"], item.get("reply")
            if not isinstance(job, str) or not job:
                out.add(where, f"enqueue must name a job, not {_shown(job)}")
                continue
            if reply is not None and (not isinstance(reply, str) or not _NAME.fullmatch(reply)):
                out.add(where, f"reply event {_shown(reply)} {_NAME_RULE}")
                continue
            actions.append(Enqueue(job, _values(item.get("args", {}), where, out), reply))
        else:
            _only(item, {"send", "machine", "key", "data"}, where, out)
            event, machine = item["send"], item.get("machine")
            if not isinstance(event, str) or not _NAME.fullmatch(event):
                out.add(where, f"send event {_shown(event)} {_NAME_RULE}")
                continue
            if not isinstance(machine, str) or not _MACHINE.fullmatch(machine):
                out.add(where, f'send needs machine = "name", not {_shown(machine)}')
                continue
            if "key" not in item:
                out.add(where, 'send needs key = "instance key" or { context = "path" }')
                continue
            key = _value(item["key"], where, out)
            actions.append(Send(machine, key, event, _values(item.get("data", {}), where, out)))
    return tuple(actions)


def _initial(raw: Mapping[str, Any], states: Mapping[str, StateDef], out: _Problems) -> str | None:
    header = raw.get("machine") if isinstance(raw.get("machine"), dict) else {}
    assert isinstance(header, dict)
    tree = raw.get("states") if isinstance(raw.get("states"), dict) else {}
    assert isinstance(tree, dict)
    named = header.get("initial")
    flagged = [str(k) for k, v in tree.items() if isinstance(v, dict) and v.get("initial") is True]
    candidates = ([named] if named is not None else []) + flagged
    if not candidates:
        out.add("machine", 'no initial state: set initial = "state" under [machine]')
        return None
    if len(set(candidates)) > 1:
        out.add("machine", f"two initial states: {', '.join(map(str, candidates))}; keep one")
        return None
    initial = candidates[0]
    if not isinstance(initial, str) or initial not in states:
        if states:
            out.add("machine", f"initial state {_shown(initial)} is not a state")
        return None
    if states[initial].final:
        out.add("machine", f"the initial state {initial} is final: the machine could never move")
    return initial


def _transitions(
    value: object,
    states: Mapping[str, StateDef],
    events: Mapping[str, Mapping[str, str]],
    out: _Problems,
) -> list[Transition]:
    if not isinstance(value, list):
        out.add("transitions", "transitions must be an array of tables ([[transitions]])")
        return []
    if len(value) > MAX_TRANSITIONS:
        out.add("transitions", f"at most {MAX_TRANSITIONS:,} transitions")
        return []
    found = []
    for index, spec in enumerate(value):
        where = f"transitions.{index}"
        if not isinstance(spec, dict):
            out.add(where, "a transition must be a table")
            continue
        _only(spec, {"from", "on", "to", "when", "guard", "set", "add", "unset"}, where, out)
        sources = spec.get("from")
        sources = [sources] if isinstance(sources, str) else sources
        ok = True
        if not isinstance(sources, list) or not sources:
            out.add(where, "from must be a state path or a list of them")
            ok, sources = False, []
        for source in sources:
            if source not in states:
                out.add(where, f"from {_shown(source)} is not a state{_near(source, states)}")
                ok = False
            elif states[source].final:
                out.add(where, f"transition out of the final state {source}")
                ok = False
        if len(set(map(str, sources))) != len(sources):
            out.add(where, "from names a state twice")
        event, target = spec.get("on"), spec.get("to")
        if not isinstance(event, str) or not _NAME.fullmatch(event):
            out.add(where, f"on (the event) {_shown(event)} {_NAME_RULE}")
            ok = False
        if target not in states:
            out.add(where, f"to {_shown(target)} is not a state{_near(target, states)}")
            ok = False
        guard = spec.get("guard")
        if guard is not None and (not isinstance(guard, str) or not _GUARD.fullmatch(guard)):
            out.add(
                where,
                f"guard {_shown(guard)} is not a name: a guard is a Python function "
                "registered under a name (guards={...}), never code",
            )
            ok = False
        when = _when(spec.get("when", []), where, out)
        set_ = _values(spec.get("set", {}), where, out)
        add = _values(spec.get("add", {}), where, out)
        unset = spec.get("unset", [])
        if not isinstance(unset, list) or not all(isinstance(k, str) for k in unset):
            out.add(where, "unset must be a list of context keys")
            unset = []
        for key in [*set_, *add, *unset]:
            if not _FIELD.fullmatch(key):
                out.add(where, f"context key {_shown(key)} is not a dotted path of keys")
        if ok:
            assert isinstance(event, str) and isinstance(target, str)
            found.append(
                Transition(
                    index, tuple(sources), event, target, when, guard, set_, add, tuple(unset)
                )
            )
    return found


def _when(value: object, where: str, out: _Problems) -> tuple[Comparison, ...]:
    items = [value] if isinstance(value, dict) else value
    if not isinstance(items, list):
        out.add(where, 'when must be a table (or a list of tables) such as { event = "x", ge = 1 }')
        return ()
    found = []
    for item in items:
        if not isinstance(item, dict):
            out.add(where, "each when condition must be a table")
            continue
        sides = [k for k in item if k in ("context", "event")]
        ops = [k for k in item if k in OPERATORS]
        extra = [k for k in item if k not in ("context", "event", *OPERATORS)]
        if len(sides) != 1 or len(ops) != 1 or extra:
            out.add(
                where,
                'a when condition has one side (context = "path" or event = "path") and one '
                f"operator of {', '.join(OPERATORS)}; got keys {', '.join(map(str, item))}",
            )
            continue
        left = _value({sides[0]: item[sides[0]]}, where, out)
        op = ops[0]
        right = _value(item[op], where, out)
        if op == "exists" and not (right.source == "literal" and isinstance(right.literal, bool)):
            out.add(where, "exists takes true or false")
            continue
        if op == "in" and right.source == "literal" and not isinstance(right.literal, list):
            out.add(where, "in takes a list (or a path to one)")
            continue
        found.append(Comparison(left, op, right))
    return tuple(found)


def _actions_and_guards(
    states: Mapping[str, StateDef],
    transitions: Sequence[Transition],
    guards: Collection[str] | None,
    jobs: Callable[[str], bool] | None,
    out: _Problems,
) -> None:
    if guards is not None:
        for t in transitions:
            if t.guard is not None and t.guard not in guards:
                known = ", ".join(sorted(guards)) or "none"
                out.add(
                    f"transitions.{t.index}",
                    f"guard {t.guard!r} is not registered (registered: {known}); pass it in "
                    "guards={...}",
                )
    if jobs is not None:
        for path, state in states.items():
            for action in (*state.enter, *state.exit):
                if isinstance(action, Enqueue) and not jobs(action.job):
                    out.add(
                        f"states.{path}",
                        f"enqueue names the job {action.job!r}, which is not registered",
                    )


def _reachability(
    name: str,
    initial: str | None,
    states: Mapping[str, StateDef],
    transitions: Sequence[Transition],
    out: _Problems,
) -> None:
    if initial is None:
        return
    probe = Definition(
        name=name or "?",
        version=0,
        initial=initial,
        context={},
        events={},
        states=states,
        transitions=tuple(transitions),
        raw={},
        digest="",
    )
    table = probe.leaf_table()
    reachable = table.reachable()
    for path in states:
        leaves = [p for p in table.states if p == path or p.startswith(f"{path}.")]
        if not any(leaf in reachable for leaf in leaves):
            out.add(f"states.{path}", f"unreachable state {path}: no transition leads into it")
    if not table.final:
        out.add("states", "no final state: instances never end", warning=True)
        return
    for problem in table.problems():
        if "has no path to a final state" in problem:
            leaf = problem.removeprefix("state ").split(" ", 1)[0]
            if leaf in reachable:
                out.add(f"states.{leaf}", f"{problem}: its instances never end", warning=True)


def _near(value: object, states: Mapping[str, StateDef]) -> str:
    if not isinstance(value, str):
        return ""
    tail = value.rsplit(".", 1)[-1]
    close = [p for p in states if p.rsplit(".", 1)[-1] == tail and p != value]
    return f" (did you mean {close[0]}?)" if close else ""


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
