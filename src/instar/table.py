"""A transition table of any state machine, and the checks every table passes.

The jobs' lifecycle (``instar.lifecycle``) is one such table; user-defined
durable machines are others. One validator and one set of diagram renderers
(``instar.diagram``) serve them all.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)


class InvalidTable(ValueError):
    """A transition table that breaks a rule; the message lists every problem at once."""

    def __init__(self, name: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"transition table {name!r} is invalid: " + "; ".join(problems))


@dataclass(frozen=True)
class TransitionTable(Generic[T]):
    """States in display order, the moves each allows, where a run starts and ends.

    ``entry``: the states a new instance may start in. ``final``: the states a
    run ends in. ``initial_only``: entry states that no move may enter again.
    ``kinds`` and ``meanings`` are labels for tables and diagrams.
    """

    name: str
    states: tuple[T, ...]
    transitions: Mapping[T, frozenset[T]]
    entry: frozenset[T]
    final: frozenset[T]
    initial_only: frozenset[T] = frozenset()
    kinds: Mapping[T, str] = field(default_factory=dict)
    meanings: Mapping[T, str] = field(default_factory=dict)
    parents: Mapping[T, T] = field(default_factory=dict)
    """A nested state's parent (user-defined machines); drawn as composite states."""
    initial_children: Mapping[T, T] = field(default_factory=dict)
    """A compound state's initial child."""
    labels: Mapping[tuple[T, T], str] = field(default_factory=dict)
    """What a move is labelled with in drawings (a machine's event names)."""

    def allows(self, from_state: T, to_state: T) -> bool:
        return to_state in self.transitions.get(from_state, frozenset())

    def targets(self, state: T) -> list[T]:
        """The states ``state`` may move to, in display order."""
        allowed = self.transitions.get(state, frozenset())
        return [s for s in self.states if s in allowed]

    def sources(self, to_state: T) -> frozenset[T]:
        """Every state from which ``to_state`` may be entered."""
        return frozenset(s for s, targets in self.transitions.items() if to_state in targets)

    def reachable(self) -> set[T]:
        """Every state some run reaches from an entry state."""
        return _closure(self.entry, self.transitions)

    def problems(self) -> list[str]:
        """Every rule the table breaks (empty when it is valid):

        each state has a row and appears once; every target is a state; entry
        and final states exist; no move enters an initial-only state; every state is
        reachable from an entry state; every non-final state has a path to a
        final one.
        """
        found: list[str] = []
        states = set(self.states)
        if len(states) != len(self.states):
            found.append("a state is listed twice")
        if set(self.transitions) != states:
            missing = states - set(self.transitions)
            extra = set(self.transitions) - states
            if missing:
                found.append(f"states without a row: {_names(missing)}")
            if extra:
                found.append(f"rows for unknown states: {_names(extra)}")
        for state, targets in self.transitions.items():
            unknown = set(targets) - states
            if unknown:
                found.append(f"{state} moves to unknown states: {_names(unknown)}")
        if not self.entry:
            found.append("no entry state")
        if not self.final:
            found.append("no final state")
        for name, group in (("entry", self.entry), ("final", self.final)):
            if not group <= states:
                found.append(f"unknown {name} states: {_names(group - states)}")
        for state in self.initial_only:
            entered_from = self.sources(state)
            if entered_from:
                found.append(
                    f"the initial state {state} must not be entered again "
                    f"(entered from {_names(entered_from)})"
                )
        reachable = self.reachable()
        if states - reachable:
            found.append(f"unreachable states: {_names(states - reachable)}")
        for state in self.states:
            if state not in self.final and not _closure({state}, self.transitions) & self.final:
                found.append(f"state {state} has no path to a final state")
        return found

    def validate(self) -> None:
        """Raise ``InvalidTable`` naming every problem, or return quietly."""
        problems = self.problems()
        if problems:
            raise InvalidTable(self.name, problems)


def _closure(start: Iterable[T], transitions: Mapping[T, frozenset[T]]) -> set[T]:
    """``start`` and every state reachable from it."""
    seen = set(start)
    frontier = list(seen)
    while frontier:
        for target in transitions.get(frontier.pop(), frozenset()):
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    return seen


def _names(states: Iterable[object]) -> str:
    return ", ".join(sorted(str(s) for s in states))
