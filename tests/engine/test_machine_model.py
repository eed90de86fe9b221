"""Durable machines against a model: generated definitions, random steps.

Hypothesis writes machine definitions (TOML text or the Python builder):
nested states up to four deep, compound states with initial children, final
states, transitions on a small alphabet with ``when`` conditions, named
guards and ``set``/``add`` updates, ``after`` timers, and entry and exit
actions that enqueue a job with a reply or send an event to an instance.
Then it interleaves sends, a frozen clock moving with the timer service
firing what is due, rollbacks, worker runs, a worker that claims a job and
dies (rescued after its lease by a new App on the same database), and App
restarts. A reference model written here (the semantics as the module
``instar.machines.interpret`` describes them, nothing imported from it)
predicts every history entry, refusal, armed timer and job; after each step
the database must agree with it, and ``verify`` must pass for every
instance.

Each generated example gets a database of its own: a file beside the
fixture's for SQLite, a schema of its own for PostgreSQL.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

import instar
from instar.clock import FrozenClock
from instar.engine import Returned, outcome_moves
from instar.machines import Conflict, InstanceExists, InstanceNotFound, Machine
from instar.machines import context as context_ref
from instar.machines import enqueue as enqueue_action
from instar.machines import event as event_ref
from instar.machines import send as send_action
from instar.maintenance.lease_rescue import LeaseRescue
from instar.maintenance.machine_timers import MachineTimers
from instar.store.contract import ClaimRequest
from tests.conftest import POSTGRES

NAME = "model"
ALPHABET = ("a", "b", "c")
KEYS = ("k0", "k1", "k2")
SEND_TARGET = "k1"
"""The instance a ``send`` action that does not send to itself sends to."""
DEFAULTS: dict[str, Any] = {"n": 0, "me": ""}
LEASE = 5.0
MAX_ATTEMPTS = 3
BURST_LIMIT = 30
"""Jobs one burst may run; replies that make jobs for ever run one pass at a time."""
MAX_JOBS = 1_000
"""Jobs one example may make: a pass whose replies would take the jobs past this
is not run (replies that multiply the jobs at each pass made 16,384 in two
passes of one example, minutes of work, past what the check lists)."""
WORKER_PATIENCE = 30.0
"""Seconds of real time a burst worker may take (a few jobs: well under one)."""
MAX_SEND_DEPTH = 16
REFUSALS_KEPT = 100
MISSING: Any = object()


# -- guards and jobs ---------------------------------------------------------------------------


def even_n(context: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    return int(context.get("n", 0)) % 2 == 0


def small_n(context: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    return int(context.get("n", 0)) < 3


def has_x(context: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    return "x" in data


def picky(context: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    if int(context.get("n", 0)) < -1:
        raise ValueError("n is below -1")
    return True


def meddler(context: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    """Writes into what it is given: the instance must not see it."""
    if isinstance(context, dict) and isinstance(data, dict):
        context["n"] = 999
        data["x"] = 999
    return True


GUARDS: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any]], bool]] = {
    f.__name__: f for f in (even_n, small_n, has_x, picky, meddler)
}


def echo(n: int) -> dict[str, int]:
    """A job whose result (an object) is the reply's data."""
    return {"x": n}


def count(n: int) -> int:
    """A job whose result (not an object) comes back as ``{"result": ...}``."""
    return n + 1


JOBS: dict[str, Callable[..., Any]] = {"model.echo": echo, "model.count": count}


# -- generated definitions ---------------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    source: str  # "context" or "event"
    path: str


Operand = int | bool | list[int] | Ref


@dataclass(frozen=True)
class Cond:
    source: str
    path: str
    op: str
    right: Operand


@dataclass(frozen=True)
class EnqueueSpec:
    job: str
    reply: str | None


@dataclass(frozen=True)
class SendSpec:
    event: str
    to_self: bool


ActionSpec = EnqueueSpec | SendSpec


@dataclass
class StateSpec:
    path: str
    parent: str | None
    children: list[str] = field(default_factory=list)
    initial: str | None = None
    final: bool = False
    after: list[tuple[int, str]] = field(default_factory=list)
    """(delay in seconds, event)."""
    enter: list[ActionSpec] = field(default_factory=list)
    exit: list[ActionSpec] = field(default_factory=list)


@dataclass(frozen=True)
class TransitionSpec:
    sources: tuple[str, ...]
    event: str
    target: str
    when: tuple[Cond, ...] = ()
    guard: str | None = None
    set: tuple[tuple[str, int | Ref], ...] = ()
    add: tuple[tuple[str, int | Ref], ...] = ()
    unset: tuple[str, ...] = ()


@dataclass
class Spec:
    initial: str
    states: dict[str, StateSpec]
    """Parents before their children."""
    transitions: list[TransitionSpec]
    as_toml: bool

    def lineage(self, path: str) -> list[str]:
        """``path`` and its ancestors, innermost first."""
        out: list[str] = []
        current: str | None = path
        while current is not None:
            out.append(current)
            current = self.states[current].parent
        return out

    def descend(self, path: str) -> list[str]:
        """The initial children below ``path``, outermost first."""
        out: list[str] = []
        state = self.states[path]
        while state.initial is not None:
            out.append(state.initial)
            state = self.states[state.initial]
        return out

    def leaf(self, path: str) -> str:
        return ([path, *self.descend(path)])[-1]

    def final(self, path: str) -> bool:
        return self.states[path].final

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """What a failing example shows: the definition as TOML (registered as
        that text, or written with the builder)."""
        written = "TOML" if self.as_toml else "the builder's"
        printer.text(f"Spec(<{written} form of>\n{toml_text(self)})")


_OPS = ("lt", "le", "gt", "ge", "eq", "ne")


def _conditions() -> st.SearchStrategy[Cond]:
    small = st.integers(-1, 4)
    return st.one_of(
        st.builds(Cond, st.just("context"), st.just("n"), st.sampled_from(_OPS), small),
        st.builds(Cond, st.just("context"), st.just("n"), st.just("in"), st.just([0, 2, 4])),
        st.builds(Cond, st.just("context"), st.just("m"), st.just("exists"), st.booleans()),
        st.builds(Cond, st.just("event"), st.just("x"), st.sampled_from(_OPS), small),
        st.builds(
            Cond,
            st.just("event"),
            st.just("x"),
            st.sampled_from(_OPS),
            st.just(Ref("context", "n")),
        ),
        st.builds(Cond, st.just("event"), st.just("x"), st.just("exists"), st.booleans()),
    )


_AMOUNTS: list[int | Ref] = [-1, 1, 2, Ref("event", "x")]
_VALUES: st.SearchStrategy[int | Ref] = st.one_of(
    st.integers(-2, 3), st.just(Ref("event", "x")), st.just(Ref("context", "n"))
)


@st.composite
def _transition(
    draw: st.DrawFn, sources: tuple[str, ...], target: str, event: str | None = None
) -> TransitionSpec:
    when = draw(st.lists(_conditions(), max_size=2)) if draw(st.integers(0, 2)) == 0 else []
    guard = draw(st.sampled_from(sorted(GUARDS))) if draw(st.integers(0, 3)) == 0 else None
    updates: list[tuple[str, int | Ref]] = []
    adds: list[tuple[str, int | Ref]] = []
    if draw(st.booleans()):
        updates.append(("n", draw(_VALUES)))
    if draw(st.integers(0, 3)) == 0:
        updates.append(("m", draw(_VALUES)))
    if draw(st.booleans()):
        adds.append(("n", draw(st.sampled_from(_AMOUNTS))))
    if draw(st.integers(0, 3)) == 0:
        adds.append(("m", 1))
    unset = ("m",) if draw(st.integers(0, 3)) == 0 else ()
    return TransitionSpec(
        sources,
        event if event is not None else draw(st.sampled_from(ALPHABET)),
        target,
        tuple(when),
        guard,
        tuple(updates),
        tuple(adds),
        unset,
    )


def _actions(draw: st.DrawFn, sends: list[SendSpec]) -> list[ActionSpec]:
    """One or two actions; a ``send`` only while ``sends`` (of the whole
    machine) is empty. Two sends, each re-entering a state that sends both
    again, would make 2**16 events in one transaction (MAX_SEND_DEPTH bounds
    the depth of sends, not their number)."""
    out: list[ActionSpec] = []
    for _ in range(draw(st.integers(1, 2))):
        if not sends and draw(st.integers(0, 4)) == 0:
            sends.append(SendSpec(draw(st.sampled_from(ALPHABET)), draw(st.booleans())))
            out.append(sends[-1])
        else:
            reply = draw(st.none() | st.sampled_from(ALPHABET))
            out.append(EnqueueSpec(draw(st.sampled_from(sorted(JOBS))), reply))
    return out


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    """A definition valid by construction: every leaf reachable from the
    initial one, at least one final leaf, no move out of a final state."""
    states: dict[str, StateSpec] = {}
    names = (f"s{i}" for i in itertools.count())

    def add(parent: str | None) -> str:
        name = next(names)
        path = name if parent is None else f"{parent}.{name}"
        states[path] = StateSpec(path, parent)
        if parent is not None:
            states[parent].children.append(path)
        return path

    tops = [add(None) for _ in range(draw(st.integers(2, 4)))]
    last = tops[-1]
    for _ in range(draw(st.integers(0, 7))):
        if last.count(".") < 3 and draw(st.integers(0, 2)) > 0:
            last = add(last)  # deeper: a chain down to four levels
        else:
            last = add(draw(st.sampled_from([p for p in states if p.count(".") < 3])))
    for state in states.values():
        if state.children:
            state.initial = draw(st.sampled_from(state.children))
    spec = Spec(draw(st.sampled_from(tops)), states, [], draw(st.booleans()))
    leaves = [p for p, s in states.items() if not s.children]
    start = spec.leaf(spec.initial)
    others = [leaf for leaf in leaves if leaf != start]
    finals = {draw(st.sampled_from(others))}
    finals |= {leaf for leaf in others if draw(st.integers(0, 4)) == 0}
    for leaf in finals:
        states[leaf].final = True

    reachable = [start]
    for leaf in draw(st.permutations(others)):
        froms = sorted(
            {s for r in reachable if not states[r].final for s in spec.lineage(r)}
            - {p for p in states if states[p].final}
        )
        source = draw(st.sampled_from(froms))
        target = draw(st.sampled_from([a for a in spec.lineage(leaf) if spec.leaf(a) == leaf]))
        spec.transitions.append(draw(_transition((source,), target)))
        reachable.append(leaf)
    movable = [p for p in states if not states[p].final]
    for _ in range(draw(st.integers(2, 8))):
        sources = draw(st.lists(st.sampled_from(movable), min_size=1, max_size=2, unique=True))
        # Mostly into states that go on: a final one ends an instance's story.
        target = draw(st.sampled_from(movable if draw(st.integers(0, 3)) else list(states)))
        spec.transitions.append(draw(_transition(tuple(sources), target)))
    for path, state in states.items():
        if not state.children or not draw(st.booleans()):
            continue
        # From a superstate into itself or below: it is left and entered again.
        inside = [p for p in states if p == path or p.startswith(f"{path}.")]
        spec.transitions.append(draw(_transition((path,), draw(st.sampled_from(inside)))))
    order = draw(st.permutations(range(len(spec.transitions))))
    spec.transitions = [spec.transitions[i] for i in order]

    sends: list[SendSpec] = []
    for state in states.values():
        if not state.final and draw(st.integers(0, 1 if state.children else 2)) == 0:
            for _ in range(draw(st.integers(1, 2))):
                timer = (draw(st.integers(1, 10)), draw(st.sampled_from(ALPHABET)))
                if timer not in state.after:  # two alike would fire alike: the check tells
                    state.after.append(timer)  # timers apart by state, event and time
        if draw(st.integers(0, 3)) == 0:
            state.enter = _actions(draw, sends)
        if draw(st.integers(0, 7)) == 0:
            state.exit = _actions(draw, sends)
    return spec


# -- the two ways of writing one --------------------------------------------------------------


def _toml_value(value: Operand) -> str:
    if isinstance(value, Ref):
        return f'{{ {value.source} = "{value.path}" }}'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def _toml_action(action: ActionSpec) -> str:
    if isinstance(action, EnqueueSpec):
        reply = "" if action.reply is None else f', reply = "{action.reply}"'
        return f'{{ enqueue = "{action.job}", args = {{ n = {{ context = "n" }} }}{reply} }}'
    key = '{ context = "me" }' if action.to_self else f'"{SEND_TARGET}"'
    return (
        f'{{ send = "{action.event}", machine = "{NAME}", key = {key}, '
        'data = { x = { context = "n" } } }'
    )


def toml_text(spec: Spec) -> str:
    lines = ["[machine]", f'name = "{NAME}"', "version = 1", f'initial = "{spec.initial}"', ""]
    lines += ["[context]", "n = 0", 'me = ""', ""]
    for path, state in spec.states.items():
        lines.append("[states." + ".states.".join(path.split(".")) + "]")
        if state.initial is not None:
            lines.append(f'initial = "{state.initial.rsplit(".", 1)[-1]}"')
        if state.final:
            lines.append("final = true")
        if state.after:
            timers = ", ".join(f'{{ delay = "{d}s", event = "{e}" }}' for d, e in state.after)
            lines.append(f"after = [{timers}]")
        for moment in ("enter", "exit"):
            actions = getattr(state, moment)
            if actions:
                lines.append(f"{moment} = [{', '.join(_toml_action(a) for a in actions)}]")
        lines.append("")
    for t in spec.transitions:
        lines.append("[[transitions]]")
        sources = ", ".join(f'"{s}"' for s in t.sources)
        lines.append(f"from = {sources}" if len(t.sources) == 1 else f"from = [{sources}]")
        lines += [f'on = "{t.event}"', f'to = "{t.target}"']
        if t.when:
            conditions = ", ".join(
                f'{{ {c.source} = "{c.path}", {c.op} = {_toml_value(c.right)} }}' for c in t.when
            )
            lines.append(f"when = [{conditions}]")
        if t.guard is not None:
            lines.append(f'guard = "{t.guard}"')
        for part in ("set", "add"):
            pairs = getattr(t, part)
            if pairs:
                body = ", ".join(f"{k} = {_toml_value(v)}" for k, v in pairs)
                lines.append(f"{part} = {{ {body} }}")
        if t.unset:
            keys = ", ".join(f'"{k}"' for k in t.unset)
            lines.append(f"unset = [{keys}]")
        lines.append("")
    return "\n".join(lines)


def _builder_value(value: Operand) -> object:
    if isinstance(value, Ref):
        return context_ref(value.path) if value.source == "context" else event_ref(value.path)
    return value


def _builder_action(action: ActionSpec) -> dict[str, Any]:
    if isinstance(action, EnqueueSpec):
        return enqueue_action(action.job, {"n": context_ref("n")}, reply=action.reply)
    key = context_ref("me") if action.to_self else SEND_TARGET
    return send_action(NAME, key, action.event, {"x": context_ref("n")})


def builder_machine(spec: Spec) -> Machine:
    machine = Machine(NAME, 1, initial=spec.initial, context=DEFAULTS)
    for path, state in spec.states.items():
        machine.state(
            path,
            initial=None if state.initial is None else state.initial.rsplit(".", 1)[-1],
            final=state.final,
            after=[(f"{d}s", e) for d, e in state.after],
            enter=[_builder_action(a) for a in state.enter],
            exit=[_builder_action(a) for a in state.exit],
        )
    for t in spec.transitions:
        when = []
        for c in t.when:
            ref = context_ref(c.path) if c.source == "context" else event_ref(c.path)
            if c.op == "exists":
                when.append(ref.exists(bool(c.right)))
            else:
                compare = getattr(ref, "is_in" if c.op == "in" else c.op)
                when.append(compare(_builder_value(c.right)))
        machine.transition(
            t.sources[0] if len(t.sources) == 1 else list(t.sources),
            t.event,
            t.target,
            when=when or None,
            guard=None if t.guard is None else GUARDS[t.guard],
            set={k: _builder_value(v) for k, v in t.set} or None,
            add={k: _builder_value(v) for k, v in t.add} or None,
            unset=t.unset,
        )
    return machine


# -- the reference model ----------------------------------------------------------------------


@dataclass(eq=False)
class ModelJob:
    name: str
    args: dict[str, Any]
    reply: str | None
    key: str
    """The instance it replies to."""
    id: int | None = None
    """Learnt from the database, which numbers jobs in the order they are made."""
    state: str = "ready"
    attempts: int = 0

    def actor(self) -> str:
        return f"job {self.id}"


@dataclass(eq=False)
class ModelTimer:
    key: str
    state: str
    event: str
    due: float


@dataclass
class ModelInstance:
    state: str
    context: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def seq(self) -> int:
        return len(self.history)


@dataclass
class Sent:
    """What a send returned: (accepted, state, seq, reason); ``nested``: its
    actions sent more events (the instance moved on past ``state``)."""

    accepted: bool
    state: str
    seq: int
    reason: str | None
    nested: bool = False


class Model:
    """The machine's semantics over plain Python data (see the module doc)."""

    def __init__(self, spec: Spec, now: float) -> None:
        self.spec = spec
        self.now = now
        self.instances: dict[str, ModelInstance] = {}
        self.timers: list[ModelTimer] = []
        """Armed, in the order they were armed (the database's ids)."""
        self.jobs: list[ModelJob] = []
        self.refusals: dict[str, list[tuple[str, str | None, str, str | ModelJob]]] = {}
        self.outcomes: dict[tuple[str, str], Sent] = {}
        self.run_queue: list[ModelJob] | None = None
        """While jobs run: the jobs still to run, in the order they will."""

    # the semantics

    def holds(self, c: Cond, context: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
        left = (context if c.source == "context" else data).get(c.path, MISSING)
        right = c.right
        if isinstance(right, Ref):
            right = (context if right.source == "context" else data).get(right.path, MISSING)
        if c.op == "exists":
            return (left is not MISSING) is right
        if left is MISSING or right is MISSING:
            return False
        if c.op == "in":
            return isinstance(right, list) and left in right
        compare: dict[str, Callable[[Any, Any], bool]] = {
            "eq": lambda a, b: bool(a == b),
            "ne": lambda a, b: bool(a != b),
            "lt": lambda a, b: bool(a < b),
            "le": lambda a, b: bool(a <= b),
            "gt": lambda a, b: bool(a > b),
            "ge": lambda a, b: bool(a >= b),
        }
        return compare[c.op](left, right)

    def updated(
        self, t: TransitionSpec, context: Mapping[str, Any], data: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """The context after ``t``'s set, add and unset (read from the context before),
        or None when a value is missing or not a number."""
        before = copy.deepcopy(dict(context))
        after = copy.deepcopy(before)

        def value(v: int | Ref) -> Any:
            if isinstance(v, Ref):
                return (before if v.source == "context" else data).get(v.path, MISSING)
            return v

        for key, v in t.set:
            found = value(v)
            if found is MISSING:
                return None
            after[key] = copy.deepcopy(found)
        for key, v in t.add:
            amount, current = value(v), after.get(key, 0)
            if not isinstance(amount, int) or not isinstance(current, int):
                return None
            after[key] = current + amount
        for key in t.unset:
            after.pop(key, None)
        return after

    def decide(
        self, state: str, context: dict[str, Any], event: str, data: dict[str, Any]
    ) -> tuple[str, TransitionSpec | None, str, dict[str, Any]]:
        """(reason or "", the transition, the state matched, the new context)."""
        if self.spec.final(state):
            return "final_state", None, "", {}
        refusal = ""
        for source in self.spec.lineage(state):
            for t in self.spec.transitions:
                if source not in t.sources or t.event != event:
                    continue
                if not all(self.holds(c, context, data) for c in t.when):
                    refusal = refusal or "condition_false"
                    continue
                if t.guard is not None:
                    try:
                        passed = GUARDS[t.guard](copy.deepcopy(context), copy.deepcopy(data))
                    except Exception:
                        return "guard_error", None, "", {}
                    if not passed:
                        refusal = refusal or "guard_false"
                        continue
                after = self.updated(t, context, data)
                if after is None:
                    return "invalid_data", None, "", {}
                return "", t, source, after
        return refusal or "no_transition", None, "", {}

    def moves(self, state: str, source: str, target: str) -> tuple[list[str], list[str]]:
        """(exited innermost first, entered outermost first): every state below
        the deepest one that holds both the source and the target."""
        above_target = self.spec.lineage(target)[1:]
        domain = next((s for s in self.spec.lineage(source)[1:] if s in above_target), None)
        exited = list(itertools.takewhile(lambda s: s != domain, self.spec.lineage(state)))
        down = list(itertools.takewhile(lambda s: s != domain, self.spec.lineage(target)))
        return exited, [*reversed(down), *self.spec.descend(target)]

    # what changes

    def plan(
        self,
        key: str,
        context: Mapping[str, Any],
        data: Mapping[str, Any],
        exited: list[str],
        entered: list[str],
    ) -> tuple[list[ModelJob], list[tuple[str, str, dict[str, Any]]]]:
        jobs: list[ModelJob] = []
        sends: list[tuple[str, str, dict[str, Any]]] = []
        steps = [self.spec.states[s].exit for s in exited]
        steps += [self.spec.states[s].enter for s in entered]
        for actions in steps:
            for action in actions:
                if isinstance(action, EnqueueSpec):
                    jobs.append(ModelJob(action.job, {"n": context["n"]}, action.reply, key))
                else:
                    target = context["me"] if action.to_self else SEND_TARGET
                    sends.append((target, action.event, {"x": context["n"]}))
        return jobs, sends

    def arm(self, key: str, states: list[str]) -> None:
        for s in states:
            for delay, event in self.spec.states[s].after:
                self.timers.append(ModelTimer(key, s, event, self.now + delay))

    def cancel(self, key: str, states: list[str] | None) -> None:
        self.timers = [
            t for t in self.timers if not (t.key == key and (states is None or t.state in states))
        ]

    def refuse(self, key: str, state: str | None, event: str, reason: str, actor: Any) -> None:
        self.refusals.setdefault(key, []).append((event, state, reason, actor))

    def perform(
        self,
        jobs: list[ModelJob],
        sends: list[tuple[str, str, dict[str, Any]]],
        actor: Any,
        depth: int,
    ) -> None:
        self.jobs += jobs
        if self.run_queue is not None:
            self.run_queue += jobs
        for target, event, data in sends:
            self.send(target, event, data, kind="event", actor=actor, depth=depth + 1)

    def create(self, key: str, given: dict[str, Any]) -> ModelInstance:
        state = self.spec.leaf(self.spec.initial)
        context = {**copy.deepcopy(DEFAULTS), **given}
        entered = list(reversed(self.spec.lineage(state)))
        jobs, sends = self.plan(key, context, {}, [], entered)
        instance = ModelInstance(state, context)
        self.instances[key] = instance
        self.record(instance, "created", None, None, None, "app", None, None)
        if not self.spec.final(state):
            self.arm(key, entered)
        self.perform(jobs, sends, "app", 0)
        return instance

    def record(
        self,
        instance: ModelInstance,
        kind: str,
        event: str | None,
        from_state: str | None,
        data: dict[str, Any] | None,
        actor: Any,
        transition: int | None,
        detail: dict[str, Any] | None,
    ) -> None:
        instance.history.append(
            {
                "seq": instance.seq + 1,
                "at": self.now,
                "kind": kind,
                "event": event,
                "from_state": from_state,
                "to_state": instance.state,
                "data": copy.deepcopy(data),
                "context": copy.deepcopy(instance.context),
                "actor": actor,
                "transition": transition,
                "version": 1,
                "detail": detail,
            }
        )

    def send(
        self,
        key: str,
        event: str,
        data: dict[str, Any],
        *,
        kind: str,
        actor: Any,
        depth: int = 0,
        detail: dict[str, Any] | None = None,
    ) -> Sent:
        instance = self.instances.get(key)
        if instance is None:
            self.refuse(key, None, event, "no_instance", actor)
            return Sent(False, "", 0, "no_instance")
        reason, t, source, context = self.decide(instance.state, instance.context, event, data)
        if t is not None:
            exited, entered = self.moves(instance.state, source, t.target)
            jobs, sends = self.plan(key, context, data, exited, entered)
            if depth >= MAX_SEND_DEPTH and sends:
                reason = "action_error"
        if reason or t is None:
            self.refuse(key, instance.state, event, reason, actor)
            return Sent(False, instance.state, instance.seq, reason)
        from_state = instance.state
        instance.state, instance.context = entered[-1] if entered else t.target, context
        index = self.spec.transitions.index(t)
        self.record(instance, kind, event, from_state, data, actor, index, detail)
        if self.spec.final(instance.state):
            self.cancel(key, None)
        else:
            self.cancel(key, exited)
            self.arm(key, entered)
        result = Sent(True, instance.state, instance.seq, None, nested=bool(sends))
        self.perform(jobs, sends, actor, depth)
        return result

    def rollback(self, key: str, to_seq: int, reason: str) -> None:
        instance = self.instances[key]
        entry = instance.history[to_seq - 1]
        from_state = instance.state
        instance.state, instance.context = entry["to_state"], copy.deepcopy(entry["context"])
        detail = {"to_seq": to_seq, "reason": reason}
        self.record(instance, "rolled_back", None, from_state, None, "app", None, detail)
        self.cancel(key, None)
        if not self.spec.final(instance.state):
            self.arm(key, self.spec.lineage(instance.state))

    def fire_due(self) -> int:
        """The timer service's pass: each due timer once, by due time then the
        order armed."""
        due = sorted(
            (t for t in self.timers if t.due <= self.now),
            key=lambda t: (t.due, self.timers.index(t)),
        )
        fired = 0
        for timer in due:
            if timer not in self.timers:
                continue  # its state was left by a timer that fired before it
            self.timers.remove(timer)
            instance = self.instances[timer.key]
            if self.spec.final(instance.state):
                continue
            if timer.state not in self.spec.lineage(instance.state):
                continue
            late_ms = max(0, round((self.now - timer.due) * 1000))
            detail = {"state": timer.state, "due_at": timer.due, "late_ms": late_ms}
            self.send(timer.key, timer.event, {}, kind="timer", actor="timer", detail=detail)
            fired += 1
        return fired

    def run_jobs(self, burst: bool, limit: int | None = None) -> bool:
        """Run the ready jobs in the order made, each one's reply delivered when
        it completes. ``burst``: a worker of one slot, which also runs the jobs
        those replies make, after them, until none is left (False once more
        than ``limit`` ran: replies that make jobs for ever); else one pass
        over the jobs ready now."""
        queue = [j for j in self.jobs if j.state == "ready"]
        self.run_queue = queue if burst else None
        ran = 0
        while queue:
            job = queue.pop(0)
            ran += 1
            if limit is not None and ran > limit:
                return False
            job.attempts += 1
            job.state = "completed"
            if job.reply is not None:
                result = JOBS[job.name](**job.args)
                data = result if isinstance(result, dict) else {"result": result}
                self.send(job.key, job.reply, data, kind="event", actor=job, detail={"job": job})
        self.run_queue = None
        return True


def _resolved(value: Any) -> Any:
    """A model value with its jobs named as the database names them."""
    if isinstance(value, ModelJob):
        return value.id if value.id is not None else "job not yet made"
    if isinstance(value, dict):
        return {k: _resolved(v) for k, v in value.items()}
    return value


def _actor(value: Any) -> Any:
    return value.actor() if isinstance(value, ModelJob) else value


def _burst(app: instar.App) -> None:
    """A worker of one slot until nothing is left to do. One that has not
    ended after ``WORKER_PATIENCE`` seconds (a batch it cannot write, retried
    for ever) is stopped, and the test fails saying so."""
    worker = app.worker(burst=True, concurrency=1)
    ended = threading.Event()
    stopped: list[bool] = []

    def watch() -> None:
        if not ended.wait(WORKER_PATIENCE):
            stopped.append(True)
            worker.stop()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        asyncio.run(worker.run())
    finally:
        ended.set()
        watcher.join()
    assert not stopped, f"a burst worker had not ended after {WORKER_PATIENCE} s"


# -- the steps ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Create:
    key: str
    n: int


@dataclass(frozen=True)
class Send:
    key: str
    event: str
    data: dict[str, int]
    idempotency_key: str | None
    expect: str
    """The expect_seq given: none, right (the instance's seq) or wrong."""


@dataclass(frozen=True)
class Advance:
    seconds: float


@dataclass(frozen=True)
class Rollback:
    pick: int


@dataclass(frozen=True)
class RunJobs:
    pass


@dataclass(frozen=True)
class WorkerDies:
    pass


@dataclass(frozen=True)
class Restart:
    pass


Step = Create | Send | Advance | Rollback | RunJobs | WorkerDies | Restart


def steps() -> st.SearchStrategy[Step]:
    """Sends most, then the clock, jobs, rollbacks, crashes and restarts."""
    sends = st.builds(
        Send,
        st.sampled_from(KEYS),
        st.sampled_from((*ALPHABET, *ALPHABET, "zz")),
        st.one_of(st.fixed_dictionaries({"x": st.integers(-2, 5)}), st.just({})),
        st.none() | st.sampled_from(["i1", "i2"]),
        st.sampled_from(["none", "none", "right", "wrong"]),
    )
    mix: list[st.SearchStrategy[Step]] = [
        sends,
        sends,
        sends,
        st.builds(Advance, st.sampled_from([0.5, 1, 2, 3, 4, 6, 10])),
        st.builds(Advance, st.sampled_from([0.5, 1, 2, 3, 4, 6, 10])),
        st.builds(RunJobs),
        st.builds(RunJobs),
        st.builds(Create, st.sampled_from(KEYS), st.integers(-1, 3)),
        st.builds(Rollback, st.integers(0, 1_000)),
        st.builds(Rollback, st.integers(0, 1_000)),
        st.builds(WorkerDies),
        st.builds(Restart),
    ]
    return st.integers(0, len(mix) - 1).flatmap(lambda i: mix[i])


# -- the state machine ------------------------------------------------------------------------


class FreshDatabases:
    """A database of its own for each generated example, made from the
    fixture's (a file beside it, or a schema named after it)."""

    def __init__(self, database: str, folder: Path) -> None:
        self.database = database
        self.folder = folder
        self.made = itertools.count()
        self.schemas: list[str] = []

    def new(self) -> str:
        number = next(self.made)
        if self.database.startswith("sqlite:///"):
            return f"sqlite:///{self.folder / f'model-{number}.db'}"
        base, schema = self.database.rsplit("schema=", 1)
        self.schemas.append(f"{schema}_{number}")
        return f"{base}schema={self.schemas[-1]}"

    def drop(self) -> None:
        if self.schemas:
            with psycopg.connect(POSTGRES, autocommit=True) as conn:
                for schema in self.schemas:
                    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            self.schemas.clear()


class MachinesAgreeWithTheModel(RuleBasedStateMachine):
    databases: ClassVar[FreshDatabases]

    def __init__(self) -> None:
        super().__init__()
        self.clock = FrozenClock()
        self.app: instar.App | None = None
        self.url = ""
        self.model: Model | None = None

    # -- set up, restart, tear down

    def open_app(self) -> instar.App:
        assert self.model is not None
        app = instar.App(self.url, clock=self.clock)
        for name, fn in JOBS.items():
            app.job(name=name, lease=LEASE, retry=instar.Retry(max_attempts=MAX_ATTEMPTS))(fn)
        spec = self.model.spec
        if spec.as_toml:
            app.machines.register_text(toml_text(spec), source="model.toml", guards=GUARDS)
        else:
            app.machines.register(builder_machine(spec))
        return app

    @property
    def m(self) -> instar.App:
        assert self.app is not None
        return self.app

    @property
    def model_(self) -> Model:
        assert self.model is not None
        return self.model

    @initialize(spec=specs(), n=st.integers(-1, 3))
    def setup(self, spec: Spec, n: int) -> None:
        self.url = self.databases.new()
        self.model = Model(spec, self.clock.now())
        self.app = self.open_app()
        self.create("k0", n)
        self.create(SEND_TARGET, n + 1)

    def teardown(self) -> None:
        if self.app is not None:
            self.app.close()
        self.databases.drop()

    def restart(self) -> None:
        self.m.close()
        self.app = self.open_app()

    # -- the steps

    @rule(action=steps())
    def step(self, action: Step) -> None:
        """One of the steps (see ``steps``): one rule draws them all, so that
        every example mixes them (separate rules would each be switched off in
        about half the examples)."""
        if isinstance(action, Create):
            self.create(action.key, action.n)
        elif isinstance(action, Send):
            self.send(action)
        elif isinstance(action, Advance):
            self.advance_and_fire_timers(action.seconds)
        elif isinstance(action, Rollback):
            self.rollback(action.pick)
        elif isinstance(action, RunJobs):
            self.run_jobs()
        elif isinstance(action, WorkerDies):
            self.worker_dies_holding_a_job()
        else:
            self.restart()

    def create(self, key: str, n: int) -> None:
        context = {"me": key, "n": n}
        if key in self.model_.instances:
            with pytest.raises(InstanceExists):
                self.m.machines.create(NAME, key, context)
            return
        created = self.m.machines.create(NAME, key, context)
        first = self.model_.create(key, context).history[0]
        # As created: an entry action that sends to the instance moves it on after.
        assert (created.state, created.context, created.seq) == (
            first["to_state"],
            first["context"],
            1,
        )

    def send(self, action: Send) -> None:
        model, machines = self.model_, self.m.machines
        key, event, data = action.key, action.event, action.data
        instance = model.instances.get(key)
        if instance is None:
            with pytest.raises(InstanceNotFound):
                machines.send(NAME, key, event, data)
            return
        expect_seq = {"none": None, "right": instance.seq, "wrong": instance.seq - 1}[action.expect]
        idempotency_key = action.idempotency_key
        prior = None if idempotency_key is None else model.outcomes.get((key, idempotency_key))
        if prior is None and expect_seq is not None and expect_seq != instance.seq:
            with pytest.raises(Conflict):
                machines.send(
                    NAME, key, event, data, idempotency_key=idempotency_key, expect_seq=expect_seq
                )
            return
        got = machines.send(
            NAME, key, event, data, idempotency_key=idempotency_key, expect_seq=expect_seq
        )
        if prior is not None:
            expected = prior  # a repeated key: the first outcome, nothing written
        else:
            expected = model.send(key, event, data, kind="event", actor="app")
            if idempotency_key is not None:
                model.outcomes[(key, idempotency_key)] = expected
        assert (got.accepted, got.reason) == (expected.accepted, expected.reason), got.detail
        if not expected.nested:
            assert (got.state, got.seq) == (expected.state, expected.seq)

    def advance_and_fire_timers(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.model_.now = self.clock.now()
        runtime = self.m.machines.runtime
        fired = MachineTimers(runtime.engine, lambda: runtime).run_once()
        assert fired == self.model_.fire_due()

    def rollback(self, pick: int) -> None:
        """Instance ``pick`` (modulo those there are) back to its entry ``pick``
        (modulo its seq)."""
        keys = sorted(self.model_.instances)
        key = keys[pick % len(keys)]
        to_seq = 1 + pick % self.model_.instances[key].seq
        reason = f"back to {to_seq}"
        self.m.machines.rollback(NAME, key, to_seq=to_seq, reason=reason)
        self.model_.rollback(key, to_seq, reason)

    def run_jobs(self) -> None:
        """A burst worker, unless the replies would make jobs for ever (the
        model, tried on a copy, runs more than ``BURST_LIMIT``): then one pass
        over the jobs ready now, each completed in a transaction of its own
        (the worker's way: its reply is delivered there), unless the jobs would
        then number more than ``MAX_JOBS``."""
        model = self.model_
        ready = [j for j in model.jobs if j.state == "ready"]
        if not ready:
            return
        if copy.deepcopy(model).run_jobs(burst=True, limit=BURST_LIMIT):
            _burst(self.m)
            model.run_jobs(burst=True)
            return
        trial = copy.deepcopy(model)
        trial.run_jobs(burst=False)
        if len(trial.jobs) > MAX_JOBS:
            return
        engine = self.m.engine
        claim = ClaimRequest("one-pass", len(ready), None, names=list(JOBS))
        claimed = engine.exchange([], [], claim).claimed
        assert [j.id for j in claimed] == [j.id for j in ready]
        for job in claimed:
            result = JOBS[job.name](**job.args)
            moves = outcome_moves(
                job,
                Returned(result),
                retry=instar.Retry(max_attempts=MAX_ATTEMPTS),
                now=self.clock.now(),
                max_payload_bytes=self.m.max_payload_bytes,
            )
            assert engine.exchange(moves, [], None).applied == [True]
        model.run_jobs(burst=False)

    def worker_dies_holding_a_job(self) -> None:
        """A worker claims the oldest ready job and is gone: a new App on the
        same database finds the lease expired and puts the job back (or fails
        it, lost on its last attempt)."""
        model = self.model_
        job = next((j for j in model.jobs if j.state == "ready"), None)
        if job is None:
            return
        claim = ClaimRequest("doomed", 1, None, names=list(JOBS))
        [claimed] = self.m.engine.exchange([], [], claim).claimed
        assert claimed.id == job.id
        job.attempts += 1
        self.restart()
        self.advance_and_fire_timers(LEASE + 1)
        assert LeaseRescue(self.m.engine).run_once() == 1
        job.state = "failed" if job.attempts >= MAX_ATTEMPTS else "ready"

    # -- what must hold after every step

    @invariant()
    def the_database_agrees_with_the_model(self) -> None:
        if self.model is None or self.app is None:
            return
        model, machines = self.model, self.app.machines
        self.check_jobs()
        timer_entries: set[tuple[str, str, str, float]] = set()
        for key, expected in model.instances.items():
            instance = machines.get(NAME, key)
            assert (instance.state, instance.context, instance.seq, instance.final) == (
                expected.state,
                expected.context,
                expected.seq,
                model.spec.final(expected.state),
            )
            history = machines.history(NAME, key)
            assert [h.seq for h in history] == list(range(1, instance.seq + 1))
            for got, want in zip(history, expected.history, strict=True):
                got_entry = got.as_dict()
                assert abs(got.at.timestamp() - want["at"]) < 1e-3
                want_entry = {
                    **want,
                    "at": got_entry["at"],
                    "actor": _actor(want["actor"]),
                    "detail": _resolved(want["detail"]),
                }
                assert got_entry == want_entry
                if got.kind == "timer":
                    assert got.detail is not None
                    fired = (key, got.detail["state"], str(got.event), got.detail["due_at"])
                    assert fired not in timer_entries, f"a timer fired twice: {fired}"
                    timer_entries.add(fired)
            verification = machines.verify(NAME, key)
            assert verification.ok, verification.problems
            self.check_timers(key, instance.state, instance.final)
        for key in KEYS:
            refusals = [(r.event, r.state, r.reason, r.actor) for r in machines.refusals(NAME, key)]
            expected_refusals = [
                (event, state, reason, _actor(actor))
                for event, state, reason, actor in model.refusals.get(key, [])
            ]
            assert refusals == list(reversed(expected_refusals))[:REFUSALS_KEPT]
        assert all(v.ok for v in machines.verify_all(NAME))

    def check_timers(self, key: str, state: str, final: bool) -> None:
        """Armed: what the model armed; never one of a state that is not
        active, none at all once final, none due (the service fired them)."""
        model = self.model_
        armed = self.m.engine.store.timers_of(NAME, key)
        got = sorted((t.state, t.event, t.due_at) for t in armed)
        want = sorted((t.state, t.event, t.due) for t in model.timers if t.key == key)
        assert got == want
        active = model.spec.lineage(state)
        assert all(t.state in active for t in armed)
        if final:
            assert armed == []
        assert all(t.due_at > self.clock.now() for t in armed)

    def check_jobs(self) -> None:
        """The jobs the actions made, one each, in the order made; each reply
        delivered at most once (an entry or a refusal), and only when its job
        completed."""
        model = self.model_
        jobs = sorted(self.m.jobs(limit=10_000), key=lambda j: j.id)
        assert len(jobs) == len(model.jobs)
        keys = [j.key for j in jobs]
        assert len(set(keys)) == len(keys)
        assert all(k is not None and k.startswith("machine:") for k in keys)
        for got, want in zip(jobs, model.jobs, strict=True):
            if want.id is None:
                want.id = got.id
            assert (got.id, got.name, got.args, got.state.value) == (
                want.id,
                want.name,
                want.args,
                want.state,
            )
        replied: dict[int, int] = {}
        for key in model.instances:
            for entry in self.m.machines.history(NAME, key):
                if entry.detail and "job" in entry.detail:
                    job_id = int(entry.detail["job"])
                    replied[job_id] = replied.get(job_id, 0) + 1
        for want in model.jobs:
            assert want.id is not None
            if want.reply is None or want.state != "completed":
                assert want.id not in replied
            else:
                assert replied.get(want.id, 0) <= 1


def _run(database: str, folder: Path) -> None:
    class Run(MachinesAgreeWithTheModel):
        databases = FreshDatabases(database, folder)

    try:
        run_state_machine_as_test(
            Run,
            settings=settings(
                max_examples=15,
                stateful_step_count=25,
                deadline=None,
                database=None,
                suppress_health_check=[
                    HealthCheck.function_scoped_fixture,
                    HealthCheck.too_slow,
                    HealthCheck.data_too_large,
                ],
            ),
        )
    finally:
        Run.databases.drop()


def test_generated_machines_keep_history_timers_and_jobs_as_the_model_says(
    database: str, tmp_path: Path
) -> None:
    _run(database, tmp_path)
