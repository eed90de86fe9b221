"""What an event does to an instance: the semantics, as pure functions.

No database here. ``decide`` judges one event against an instance's state and
context: which transition wins (the deepest active state first, candidates
in definition order, the first whose condition and guard hold), which states
it exits (innermost first) and enters (outermost first, down the target's
initial children), the new context, and the timers that go and come. The
runtime (``instar.machines.runtime``) writes the outcome; ``verify`` replays
a history through the same functions.

Transitions are external: the states left are those below the deepest state
that contains both the source and the target (a move among the children of
``fulfilment`` leaves ``fulfilment`` active, and its timers armed; a move
from a state to itself exits and enters it again).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from instar.machines.definition import (
    JSON_TYPES,
    Comparison,
    Definition,
    Timer,
    Transition,
    Value,
)

Guard = Callable[[Mapping[str, Any], Mapping[str, Any]], bool]

REASONS = (
    "no_transition",
    "guard_false",
    "condition_false",
    "final_state",
    "invalid_data",
    "guard_error",
)
"""Why an event is refused (``SendResult.reason``)."""

MISSING: Any = object()
"""What a path that leads nowhere resolves to."""


class UpdateError(ValueError):
    """A context update that cannot apply (adding to text, a missing event field)."""


@dataclass
class Outcome:
    """What an event does. Refused: ``reason`` (one of ``REASONS``) and
    ``detail`` in words; nothing else is meaningful. Accepted: the
    ``transition``, the new leaf ``state`` and ``context``, the states
    ``exited`` (innermost first) and ``entered`` (outermost first)."""

    accepted: bool
    reason: str | None = None
    detail: str | None = None
    transition: Transition | None = None
    state: str = ""
    context: dict[str, Any] = field(default_factory=dict)
    exited: list[str] = field(default_factory=list)
    entered: list[str] = field(default_factory=list)


def lookup(source: Mapping[str, Any], path: Sequence[str]) -> Any:
    """The value at ``path`` in ``source``, or ``MISSING``."""
    current: Any = source
    for part in path:
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return MISSING
    return current


def resolve(value: Value, context: Mapping[str, Any], data: Mapping[str, Any]) -> Any:
    """A value's literal, or what its path points at (``MISSING`` if nothing)."""
    if value.source == "literal":
        return value.literal
    return lookup(context if value.source == "context" else data, value.path)


def holds(comparison: Comparison, context: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    """Whether a ``when`` condition holds. A missing path only satisfies
    ``exists = false``; values of different kinds are never ordered."""
    left = resolve(comparison.left, context, data)
    right = resolve(comparison.right, context, data)
    op = comparison.op
    if op == "exists":
        return (left is not MISSING) is bool(right)
    if left is MISSING or right is MISSING:
        return False
    if op == "eq":
        return _same(left, right)
    if op == "ne":
        return not _same(left, right)
    if op == "in":
        return isinstance(right, list) and any(_same(left, item) for item in right)
    if not _ordered(left, right):
        return False
    if op == "lt":
        return bool(left < right)
    if op == "le":
        return bool(left <= right)
    if op == "gt":
        return bool(left > right)
    return bool(left >= right)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same(left: object, right: object) -> bool:
    if _number(left) and _number(right):
        return left == right
    return type(left) is type(right) and left == right


def _ordered(left: object, right: object) -> bool:
    return (_number(left) and _number(right)) or (isinstance(left, str) and isinstance(right, str))


def data_problem(definition: Definition, event: str, data: Mapping[str, Any]) -> str | None:
    """Why ``data`` does not fit ``event``'s declared payload, or None."""
    schema = definition.events.get(event)
    if not schema:
        return None
    for name, kind in schema.items():
        if name not in data:
            return f"event {event!r} needs the field {name!r} ({kind})"
        if not JSON_TYPES[kind](data[name]):
            shown = json.dumps(data[name])[:40]
            return f"event {event!r}: field {name!r} must be {kind}, not {shown}"
    return None


def decide(
    definition: Definition,
    state: str,
    context: Mapping[str, Any],
    event: str,
    data: Mapping[str, Any],
    guards: Mapping[str, Guard],
) -> Outcome:
    """Judge ``event`` with ``data`` against an instance in leaf ``state``."""
    if definition.states[state].final:
        return Outcome(False, "final_state", f"the instance is in the final state {state}")
    problem = data_problem(definition, event, data)
    if problem:
        return Outcome(False, "invalid_data", problem)
    first_refusal: tuple[str, str] | None = None
    for source in definition.lineage(state):
        for transition in definition.by_event.get((source, event), ()):
            if not all(holds(c, context, data) for c in transition.when):
                first_refusal = first_refusal or (
                    "condition_false",
                    f"the condition of transition #{transition.index} "
                    f"({source} -> {transition.target}) does not hold",
                )
                continue
            if transition.guard is not None:
                guard = guards.get(transition.guard)
                if guard is None:
                    return Outcome(
                        False,
                        "guard_error",
                        f"guard {transition.guard!r} is not registered in this process",
                    )
                try:
                    passed = bool(guard(copy.deepcopy(dict(context)), copy.deepcopy(dict(data))))
                except Exception as exc:
                    return Outcome(
                        False,
                        "guard_error",
                        f"guard {transition.guard!r} raised {type(exc).__name__}: {exc}"[:500],
                    )
                if not passed:
                    first_refusal = first_refusal or (
                        "guard_false",
                        f"guard {transition.guard!r} of transition #{transition.index} "
                        f"({source} -> {transition.target}) said no",
                    )
                    continue
            return take(definition, state, context, data, transition, source)
    if first_refusal is not None:
        return Outcome(False, *first_refusal)
    return Outcome(False, "no_transition", f"no transition for {event!r} from {state}")


def take(
    definition: Definition,
    state: str,
    context: Mapping[str, Any],
    data: Mapping[str, Any],
    transition: Transition,
    source: str,
) -> Outcome:
    """The outcome of ``transition`` (matched at ``source``) from leaf ``state``."""
    try:
        updated = update(transition, context, data)
    except UpdateError as exc:
        return Outcome(False, "invalid_data", str(exc))
    exited, entered, leaf = moves(definition, state, source, transition.target)
    return Outcome(
        True,
        transition=transition,
        state=leaf,
        context=updated,
        exited=exited,
        entered=entered,
    )


def update(
    transition: Transition, context: Mapping[str, Any], data: Mapping[str, Any]
) -> dict[str, Any]:
    """The context after ``transition``'s ``set``, ``add`` and ``unset`` (values
    read from the context before the update)."""
    before = context  # only read: each value taken from it is copied
    after = copy.deepcopy(dict(context))
    for key, value in transition.set.items():
        found = resolve(value, before, data)
        if found is MISSING:
            raise UpdateError(f"set {key}: the {value.source} has no {'.'.join(value.path)}")
        _put(after, key, copy.deepcopy(found))
    for key, value in transition.add.items():
        amount = resolve(value, before, data)
        current = lookup(after, key.split("."))
        current = 0 if current is MISSING else current
        if not _number(amount) or not _number(current):
            raise UpdateError(f"add {key}: both the value and the amount must be numbers")
        _put(after, key, current + amount)
    for key in transition.unset:
        parts = key.split(".")
        parent = lookup(after, parts[:-1])
        if isinstance(parent, dict):
            parent.pop(parts[-1], None)
    return after


def _put(target: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    for part in parts[:-1]:
        child = target.get(part)
        if not isinstance(child, dict):
            child = target[part] = {}
        target = child
    target[parts[-1]] = value


def moves(
    definition: Definition, state: str, source: str, target: str
) -> tuple[list[str], list[str], str]:
    """(exited innermost first, entered outermost first, the new leaf) of a
    transition written at ``source`` taken from leaf ``state`` to ``target``."""
    source_up = definition.lineage(source)[1:]
    target_up = definition.lineage(target)[1:]
    domain = next((s for s in source_up if s in target_up), None)
    exited = []
    for s in definition.lineage(state):
        if s == domain:
            break
        exited.append(s)
    entered_down = []
    for s in definition.lineage(target):
        if s == domain:
            break
        entered_down.append(s)
    entered = list(reversed(entered_down))
    leaf = target
    while definition.states[leaf].initial is not None:
        leaf = definition.states[leaf].initial  # type: ignore[assignment]
        entered.append(leaf)
    return exited, entered, leaf


def entry_path(definition: Definition, leaf: str) -> list[str]:
    """The states a new instance enters, outermost first, down to ``leaf``."""
    return list(reversed(definition.lineage(leaf)))


def timers_of(definition: Definition, states: Sequence[str]) -> list[tuple[str, Timer]]:
    return [(s, timer) for s in states for timer in definition.states[s].after]
