"""Durable machine instances: every change one transaction, nothing in memory.

``MachineRuntime`` writes through the engine's transactions
(``Engine.transaction``): an accepted event updates the instance
(compare-and-set on its ``seq`` under the instance's row lock), appends one
history entry with the state and context it left, cancels the timers of the
states it exits and arms those of the states it enters, and performs the
entry and exit actions (jobs enqueued, events sent to other instances) —
all of it committing together or not at all. A refused event changes
nothing but the bounded refusal log.

What lives in this process only: the guards (Python functions, by name),
the listeners, and a cache of compiled definitions (immutable per
``(name, version)``, so never stale).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from instar.engine import Engine
from instar.errors import (
    Conflict,
    DefinitionConflict,
    InstanceExists,
    InstanceNotFound,
    InvalidMachine,
    InvalidOption,
    MachineNotFound,
    PayloadError,
    UnknownJob,
)
from instar.machines.definition import (
    Definition,
    Enqueue,
    Locate,
    Send,
    check_event,
    check_machine_name,
    compile_definition,
)
from instar.machines.interpret import (
    MISSING,
    Guard,
    Outcome,
    UpdateError,
    decide,
    entry_path,
    moves,
    resolve,
    timers_of,
    update,
)
from instar.machines.records import (
    Happening,
    HistoryEntry,
    Instance,
    Refusal,
    SendResult,
    Verification,
)
from instar.payload import encode
from instar.registry import Placement, Registry, new_jobs
from instar.registry.limits import check_text
from instar.store.contract import (
    Advance,
    HistoryRow,
    InstanceRow,
    NewJob,
    RefusalRow,
    Reply,
    TimerRow,
    Transaction,
)

log = logging.getLogger("instar.machines")

MAX_DATA_BYTES = 256 * 1024
"""The default limit of an instance's context and of an event's data, as JSON."""
REFUSALS_KEPT = 100
"""Refusals each instance keeps (the newest)."""
MAX_SEND_DEPTH = 16
"""Events sent by actions, sent by actions …: a chain longer than this is refused."""
MAX_CASCADE_SENDS = 1_000
"""Events that actions may send in one transaction, however they fan out: an
event whose actions would send more is refused (without it, 32 sends a state
nested 16 deep could write without end in one transaction)."""
MAX_KEY_BYTES = 512
KNOWN_ROWS = 10_000
"""Instance rows a process remembers for the one-write send (``_send_known``)."""

Listener = Callable[[Happening], Any]
LISTENER_KINDS = ("enter", "exit", "transition", "refusal")


class _ActionError(Exception):
    """An entry or exit action that cannot be performed: the event is refused."""


@dataclass
class _Cascade:
    """What one call's events set off, in its one transaction: the happenings
    told to listeners after the commit, and how many more events actions may
    still send (``MAX_CASCADE_SENDS``)."""

    happened: list[Happening] = field(default_factory=list)
    sends_left: int = MAX_CASCADE_SENDS

    def spend(self, planned: _Planned, depth: int) -> None:
        """Count the sends of an event's actions; ``_ActionError`` past either limit."""
        if not planned.sends:
            return
        if depth >= MAX_SEND_DEPTH:
            raise _ActionError(f"actions sent events more than {MAX_SEND_DEPTH} deep")
        if len(planned.sends) > self.sends_left:
            raise _ActionError(
                f"actions sent more than {MAX_CASCADE_SENDS:,} events in one transaction"
            )
        self.sends_left -= len(planned.sends)


@dataclass
class _Planned:
    machine: str
    key: str
    jobs: list[tuple[NewJob, str | None]]
    """Jobs to enqueue, each with the event its result comes back as (or None)."""
    sends: list[tuple[str, str, str, dict[str, Any]]]
    """(machine, key, event, data) to send."""


def check_key(key: object) -> str:
    return check_text(key, "instance key", max_bytes=MAX_KEY_BYTES, printable=False)


class MachineRuntime:
    """Definitions, instances, timers, replies and listeners of one App."""

    def __init__(
        self, engine: Callable[[], Engine], registry: Registry, max_bytes: int = MAX_DATA_BYTES
    ) -> None:
        self._engine = engine
        self.registry = registry
        self.max_bytes = max_bytes
        self._definitions: dict[tuple[str, int], Definition] = {}
        self._guards: dict[str, dict[str, Guard]] = {}
        self._listeners: list[tuple[str, str | None, str | None, Listener]] = []
        self._known: dict[tuple[str, str], InstanceRow] = {}
        """The last row of each instance this process wrote (its seq is what a
        send compare-and-sets on; a stale one only costs the locked way)."""

    @property
    def engine(self) -> Engine:
        """The App's engine (opened on first use; the App points its
        ``replies`` at ``deliver_replies``)."""
        return self._engine()

    # -- definitions ---------------------------------------------------------------------

    def register(
        self,
        raw: Mapping[str, Any],
        *,
        locate: Locate | None = None,
        guards: Mapping[str, Guard] | None = None,
        problems: Sequence[str] = (),
    ) -> Definition:
        """Check ``raw`` and keep it; ``InvalidMachine`` lists every problem,
        ``DefinitionConflict`` when its (name, version) holds another text.
        Registering the same text again is harmless (each process does it)."""
        header = raw.get("machine")
        name = header.get("name") if isinstance(header, dict) else None
        known = dict(self._guards.get(name, {})) if isinstance(name, str) else {}
        for guard_name, fn in (guards or {}).items():
            if not callable(fn):
                raise InvalidMachine(str(name), [f"guard {guard_name!r} is not a function"])
            known[guard_name] = fn
        jobs = self._job_known if len(self.registry) else None
        try:
            definition = compile_definition(raw, locate=locate, guards=known, jobs=jobs)
        except InvalidMachine as exc:
            raise InvalidMachine(exc.name, [*problems, *exc.problems]) from None
        if problems:
            raise InvalidMachine(definition.name, list(problems))
        try:
            body = json.dumps(definition.raw, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidMachine(definition.name, [f"not JSON data: {exc}"]) from None
        with self.engine.transaction() as tx:
            kept = tx.save_definition(definition.name, definition.version, body, definition.digest)
        if kept is not None and kept != definition.digest:
            raise DefinitionConflict(definition.name, definition.version)
        self._guards[definition.name] = known
        self._definitions[(definition.name, definition.version)] = definition
        return definition

    def use_guards(self, machine: str, guards: Mapping[str, Guard]) -> None:
        """Know ``machine``'s guards in this process without registering it (the
        database is not opened): for a worker whose database is chosen on the
        command line, which delivers job replies and fires timers."""
        check_machine_name(machine)
        for guard_name, fn in guards.items():
            if not callable(fn):
                raise InvalidMachine(machine, [f"guard {guard_name!r} is not a function"])
        self._guards[machine] = {**self._guards.get(machine, {}), **guards}

    def _job_known(self, job: str) -> bool:
        try:
            self.registry.find(job)
        except UnknownJob:
            return False
        return True

    def definition(self, name: str, version: int | None = None) -> Definition:
        """The definition of ``name`` at ``version`` (None: the latest);
        ``MachineNotFound`` if there is none."""
        if version is not None and (name, version) in self._definitions:
            return self._definitions[(name, version)]
        found = self.engine.store.definition_body(name, version)
        return self._compiled(name, version, found)

    def _definition_in(self, tx: Transaction, name: str, version: int | None) -> Definition:
        if version is not None and (name, version) in self._definitions:
            return self._definitions[(name, version)]
        return self._compiled(name, version, tx.definition_body(name, version))

    def _compiled(
        self, name: str, version: int | None, found: tuple[int, str] | None
    ) -> Definition:
        if found is None:
            raise MachineNotFound(name, version)
        number, body = found
        cached = self._definitions.get((name, number))
        if cached is None:
            cached = compile_definition(json.loads(body))
            self._definitions[(name, number)] = cached
        return cached

    # -- instances --------------------------------------------------------------------------

    def create(
        self,
        machine: str,
        key: str,
        context: Mapping[str, Any] | None = None,
        *,
        version: int | None = None,
        actor: str | None = None,
    ) -> Instance:
        """A new instance in the initial state (down its initial children), its
        context the definition's defaults updated with ``context``; the entry
        actions and timers of the states it enters. ``InstanceExists`` if the
        key is taken, ``MachineNotFound``, ``PayloadError``."""
        check_machine_name(machine)
        check_key(key)
        given = self._data(context, f"the context of {machine} {key!r}")
        cascade = _Cascade()
        with self.engine.transaction() as tx:
            definition = self._definition_in(tx, machine, version)
            state = definition.leaf(definition.initial)
            values = {**copy.deepcopy(dict(definition.context)), **given}
            context_json = encode(values, what="the context", max_bytes=self.max_bytes)
            row = InstanceRow(
                machine,
                key,
                definition.version,
                state,
                context_json,
                1,
                definition.states[state].final,
                tx.now,
                tx.now,
            )
            entered = entry_path(definition, state)
            try:
                planned = self._plan(definition, row, values, {}, [], entered, 1)
                cascade.spend(planned, 0)
            except _ActionError as exc:
                raise InvalidOption(f"cannot create {machine} {key!r}: {exc}") from None
            if not tx.insert_instance(row):
                raise InstanceExists(machine, key)
            entry = HistoryRow(
                machine,
                key,
                1,
                tx.now,
                "created",
                None,
                None,
                state,
                None,
                context_json,
                actor,
                None,
                definition.version,
                None,
            )
            tx.append_history([entry])
            self._arm(tx, definition, row, entered)
            self._perform(tx, planned, actor, 0, cascade)
            cascade.happened += [_happening("enter", row, s, values) for s in entered]
            tx.after_commit.append(lambda: self._tell(cascade.happened))
        self._remember(row)
        return Instance.of(row)

    def send(
        self,
        machine: str,
        key: str,
        event: str,
        data: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        expect_seq: int | None = None,
        actor: str | None = None,
    ) -> SendResult:
        """Judge ``event`` against the instance as it stands when its lock is
        held. ``InstanceNotFound``; ``Conflict`` when ``expect_seq`` is given
        and the instance moved on; ``PayloadError`` for data that is not a
        JSON object within the limit. A repeated ``idempotency_key`` returns
        the first outcome and writes nothing."""
        check_machine_name(machine)
        check_key(key)
        check_event(event)
        values = self._data(data, f"the data of event {event!r}")
        if idempotency_key is not None:
            check_text(idempotency_key, "idempotency key", max_bytes=MAX_KEY_BYTES)
        if expect_seq is not None and (
            isinstance(expect_seq, bool) or not isinstance(expect_seq, int)
        ):
            raise InvalidOption(f"expect_seq must be a whole number, not {expect_seq!r:.40}")
        if idempotency_key is None:
            known = self._send_known(machine, key, event, values, expect_seq, actor)
            if known is not None:
                return known
        cascade = _Cascade()
        with self.engine.transaction() as tx:
            result = self._send_in(
                tx,
                machine,
                key,
                event,
                values,
                kind="event",
                actor=actor,
                depth=0,
                cascade=cascade,
                idempotency_key=idempotency_key,
                expect_seq=expect_seq,
            )
            tx.after_commit.append(lambda: self._tell(cascade.happened))
        return result

    def _data(self, data: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            raise PayloadError(f"{what} must be a JSON object (a dict), not {type(data).__name__}")
        values = dict(data)
        encode(values, what=what, max_bytes=self.max_bytes)
        return copy.deepcopy(values)

    def _send_in(
        self,
        tx: Transaction,
        machine: str,
        key: str,
        event: str,
        data: dict[str, Any],
        *,
        kind: str,
        actor: str | None,
        depth: int,
        cascade: _Cascade,
        idempotency_key: str | None = None,
        expect_seq: int | None = None,
        row: InstanceRow | None = None,
        detail: dict[str, Any] | None = None,
        raise_missing: bool = True,
    ) -> SendResult:
        row = row or tx.lock_instance(machine, key)
        if row is None:
            if raise_missing and depth == 0:
                raise InstanceNotFound(machine, key)
            why = f"{machine} has no instance {key!r}"
            self._refuse(tx, machine, key, None, event, "no_instance", why, actor)
            return SendResult(False, "", 0, "no_instance", why)
        if idempotency_key is not None:
            prior = tx.send_outcome(machine, key, idempotency_key)
            if prior is not None:
                return SendResult.from_dict(json.loads(prior))
        if expect_seq is not None and row.seq != expect_seq:
            raise Conflict(machine, key, expect_seq, row.seq)
        definition = self._definition_in(tx, machine, row.version)
        context = json.loads(row.context_json)
        outcome = decide(definition, row.state, context, event, data, self._guards.get(machine, {}))
        planned: _Planned | None = None
        context_json = ""
        if outcome.accepted:
            seq = row.seq + 1
            try:
                context_json = encode(outcome.context, what="the context", max_bytes=self.max_bytes)
                planned = self._plan(
                    definition, row, outcome.context, data, outcome.exited, outcome.entered, seq
                )
                cascade.spend(planned, depth)
            except PayloadError as exc:
                outcome = Outcome(False, "invalid_data", str(exc))
            except _ActionError as exc:
                outcome = Outcome(False, "action_error", str(exc))
        if not outcome.accepted or planned is None:
            assert outcome.reason is not None
            self._refuse(tx, machine, key, row.state, event, outcome.reason, outcome.detail, actor)
            if self._listeners:
                cascade.happened.append(
                    _happening("refusal", row, None, context, event=event, reason=outcome.reason)
                )
            result = SendResult(False, row.state, row.seq, outcome.reason, outcome.detail)
            current = row
            tx.after_commit.append(lambda: self._remember(current))
        else:
            result = self._accept(
                tx,
                definition,
                row,
                outcome,
                context_json,
                planned,
                kind,
                event,
                data,
                actor,
                detail,
                depth,
                cascade,
            )
        if idempotency_key is not None:
            tx.save_send_outcome(machine, key, idempotency_key, json.dumps(result.as_dict()))
        return result

    def _accept(
        self,
        tx: Transaction,
        definition: Definition,
        row: InstanceRow,
        outcome: Outcome,
        context_json: str,
        planned: _Planned,
        kind: str,
        event: str,
        data: dict[str, Any],
        actor: str | None,
        detail: dict[str, Any] | None,
        depth: int,
        cascade: _Cascade,
    ) -> SendResult:
        advance = _advance(
            definition, row, outcome, context_json, kind, event, data, actor, detail, tx.now
        )
        if not tx.advance_instance(advance):
            raise RuntimeError(f"{row.machine} {row.key!r} changed under its lock")
        if self._listeners:  # each happening copies the context: none unless someone listens
            cascade.happened += _happenings(advance.moved, outcome, event, row.state)
        # Remembered before the actions run: one that sends to this instance again
        # moves it on, and the row it leaves is the one to remember.
        tx.after_commit.append(lambda: self._remember(advance.moved))
        self._perform(tx, planned, actor, depth, cascade)
        return SendResult(True, outcome.state, advance.moved.seq)

    def _send_known(
        self,
        machine: str,
        key: str,
        event: str,
        data: dict[str, Any],
        expect_seq: int | None,
        actor: str | None,
    ) -> SendResult | None:
        """The send of an instance whose row this process knows, as one write
        that compare-and-sets on that row's seq (PostgreSQL: one round trip).
        None when the fast way does not apply (unknown or stale row, a refusal,
        actions to perform): the caller takes the locked way."""
        row = self._known.get((machine, key))
        if row is None or (expect_seq is not None and expect_seq != row.seq):
            return None
        definition = self._definitions.get((machine, row.version))
        if definition is None:
            return None
        context = json.loads(row.context_json)
        outcome = decide(definition, row.state, context, event, data, self._guards.get(machine, {}))
        if not outcome.accepted:
            return None
        try:
            context_json = encode(outcome.context, what="the context", max_bytes=self.max_bytes)
            planned = self._plan(
                definition, row, outcome.context, data, outcome.exited, outcome.entered, row.seq + 1
            )
        except (PayloadError, _ActionError):
            return None
        if planned.jobs or planned.sends:
            return None
        now = self.engine.clock.now()
        advance = _advance(
            definition, row, outcome, context_json, "event", event, data, actor, None, now
        )
        if not self.engine.store.advance_one(advance, now):
            self._known.pop((machine, key), None)
            return None
        self._remember(advance.moved)
        if self._listeners:
            self._tell(_happenings(advance.moved, outcome, event, row.state))
        return SendResult(True, outcome.state, advance.moved.seq)

    def _remember(self, row: InstanceRow) -> None:
        if len(self._known) >= KNOWN_ROWS:
            self._known.clear()
        self._known[(row.machine, row.key)] = row

    def _arm(
        self, tx: Transaction, definition: Definition, row: InstanceRow, entered: Sequence[str]
    ) -> None:
        if not row.final:
            tx.arm_timers(_timers(definition, row, entered, tx.now))

    def _plan(
        self,
        definition: Definition,
        row: InstanceRow,
        context: Mapping[str, Any],
        data: Mapping[str, Any],
        exited: Sequence[str],
        entered: Sequence[str],
        seq: int,
    ) -> _Planned:
        """The jobs and sends of the exit actions (innermost first), then the
        entry actions (outermost first), their values read from the new
        context and the event's data; ``_ActionError`` for one that cannot be."""
        planned = _Planned(row.machine, row.key, [], [])
        steps = [(s, "exit", definition.states[s].exit) for s in exited]
        steps += [(s, "enter", definition.states[s].enter) for s in entered]
        for state, moment, actions in steps:
            for index, action in enumerate(actions):
                where = f"{moment} action {index + 1} of {state}"
                if isinstance(action, Enqueue):
                    args = {k: _resolved(v, context, data, where) for k, v in action.args.items()}
                    try:
                        job = self.registry.find(action.job)
                        job_key = _job_key(row.machine, row.key, seq, state, moment, index)
                        spec = new_jobs(
                            job, [args], Placement(key=job_key), max_payload_bytes=self.max_bytes
                        )[0]
                    except (UnknownJob, InvalidOption, PayloadError) as exc:
                        raise _ActionError(f"{where}: {exc}") from None
                    planned.jobs.append((spec, action.reply))
                else:
                    assert isinstance(action, Send)
                    target = _resolved(action.key, context, data, where)
                    if not isinstance(target, str) or not target:
                        raise _ActionError(f"{where}: the key to send to is not text: {target!r}")
                    values = {k: _resolved(v, context, data, where) for k, v in action.data.items()}
                    planned.sends.append((action.machine, target, action.event, values))
        return planned

    def _perform(
        self,
        tx: Transaction,
        planned: _Planned,
        actor: str | None,
        depth: int,
        cascade: _Cascade,
    ) -> None:
        if planned.jobs:
            created = self.engine.enqueue_in(tx, [spec for spec, _ in planned.jobs], actor)
            tx.add_replies(
                [
                    Reply(job.id, planned.machine, planned.key, reply)
                    for job, (_, reply) in zip(created, planned.jobs, strict=True)
                    if reply is not None
                ]
            )
        for machine, key, event, data in planned.sends:
            self._send_in(
                tx,
                machine,
                key,
                event,
                data,
                kind="event",
                actor=actor,
                depth=depth + 1,
                cascade=cascade,
                raise_missing=False,
            )

    def _refuse(
        self,
        tx: Transaction,
        machine: str,
        key: str,
        state: str | None,
        event: str,
        reason: str,
        detail: str | None,
        actor: str | None,
    ) -> None:
        row = RefusalRow(None, machine, key, tx.now, event, state, reason, detail, actor)
        tx.add_refusal(row, REFUSALS_KEPT)

    # -- timers and replies ---------------------------------------------------------------

    def fire_timers(self, timers: Sequence[TimerRow]) -> int:
        """Send each due timer's event, once, all in one transaction (one
        commit for the lot); if any of them fails, each goes again in a
        transaction of its own, so that one bad instance holds back no other.
        A timer that fired already or whose state was left (stale) is
        discarded. Returns how many fired."""
        try:
            with self.engine.transaction() as tx:
                fired = [self._fire_in(tx, timer) for timer in timers]
        except Exception as exc:
            if len(timers) == 1:
                raise
            log.info("firing %d timers together failed (%s); one by one", len(timers), exc)
            fired = []
            for timer in timers:
                try:
                    fired.append(self.fire_timer(timer))
                except Exception as one:
                    log.warning(
                        "timer %s of %s %r failed (%s); the others go on",
                        timer.event,
                        timer.machine,
                        timer.key,
                        one,
                    )
        return sum(result is not None for result in fired)

    def fire_timer(self, timer: TimerRow) -> SendResult | None:
        """``fire_timers`` for one timer: its send, or None when discarded."""
        with self.engine.transaction() as tx:
            return self._fire_in(tx, timer)

    def _fire_in(self, tx: Transaction, timer: TimerRow) -> SendResult | None:
        row = tx.lock_instance(timer.machine, timer.key)
        if not tx.take_timer(timer.id or 0):
            return None
        if row is None or row.final:
            return None
        definition = self._definition_in(tx, timer.machine, row.version)
        if timer.state not in definition.states or timer.state not in definition.lineage(row.state):
            return None
        late_ms = max(0, round((tx.now - timer.due_at) * 1000))
        detail = {"state": timer.state, "due_at": timer.due_at, "late_ms": late_ms}
        cascade = _Cascade()
        result = self._send_in(
            tx,
            timer.machine,
            timer.key,
            timer.event,
            {},
            kind="timer",
            actor="timer",
            depth=0,
            cascade=cascade,
            row=row,
            detail=detail,
        )
        tx.after_commit.append(lambda: self._tell(cascade.happened))
        return result

    def deliver_replies(self, tx: Transaction, job_ids: Sequence[int]) -> None:
        """In the completion transaction of these jobs: send each one's result
        (an object as it is, anything else as ``{"result": value}``) as its
        reply event; each reply once (its row is taken)."""
        replies = tx.take_replies(job_ids)
        if not replies:
            return
        happened: list[Happening] = []
        for reply in replies:
            job = tx.lock_job(reply.job_id)
            result = None if job is None else job.result
            data = result if isinstance(result, dict) else {"result": result}
            try:
                encode(data, what="a reply", max_bytes=self.max_bytes)
            except PayloadError as exc:
                self._refuse(
                    tx,
                    reply.machine,
                    reply.key,
                    None,
                    reply.event,
                    "invalid_data",
                    str(exc),
                    f"job {reply.job_id}",
                )
                continue
            self._send_in(
                tx,
                reply.machine,
                reply.key,
                reply.event,
                data,
                kind="event",
                actor=f"job {reply.job_id}",
                depth=0,
                cascade=_Cascade(happened),  # each reply's events counted on their own
                detail={"job": reply.job_id},
                raise_missing=False,
            )
        tx.after_commit.append(lambda: self._tell(happened))

    # -- rollback and migration ------------------------------------------------------------

    def rollback(
        self, machine: str, key: str, to_seq: int, reason: str, *, actor: str | None = None
    ) -> Instance:
        """Return the instance to the state and context recorded at ``to_seq``,
        as a new ``rolled_back`` entry; the timers of the restored states are
        armed from now; jobs already enqueued stay. ``InvalidOption`` for a seq
        not in the (kept) history or an empty reason."""
        check_text(reason, "reason", max_bytes=4096)
        if isinstance(to_seq, bool) or not isinstance(to_seq, int) or to_seq < 1:
            raise InvalidOption(f"to_seq must be a history entry's seq (1 or more), not {to_seq!r}")
        with self.engine.transaction() as tx:
            row = tx.lock_instance(machine, key)
            if row is None:
                raise InstanceNotFound(machine, key)
            entry = tx.history_entry(machine, key, to_seq)
            if entry is None:
                raise InvalidOption(
                    f"{machine} {key!r} has no history entry {to_seq} (its last is {row.seq}; "
                    "older entries may have been pruned by its retention)"
                )
            definition = self._definition_in(tx, machine, entry.version)
            seq = row.seq + 1
            final = definition.states[entry.to_state].final
            restored = InstanceRow(
                machine,
                key,
                entry.version,
                entry.to_state,
                entry.context_json,
                seq,
                final,
                row.created_at,
                tx.now,
            )
            tx.update_instance(restored, row.seq)
            tx.after_commit.append(lambda: self._remember(restored))
            detail = json.dumps({"to_seq": to_seq, "reason": reason})
            tx.append_history(
                [
                    HistoryRow(
                        machine,
                        key,
                        seq,
                        tx.now,
                        "rolled_back",
                        None,
                        row.state,
                        entry.to_state,
                        None,
                        entry.context_json,
                        actor,
                        None,
                        entry.version,
                        detail,
                    )
                ]
            )
            tx.cancel_timers(machine, key, None)
            self._arm(tx, definition, restored, definition.lineage(entry.to_state))
        return Instance.of(restored)

    def migrate(
        self,
        machine: str,
        to_version: int,
        state_map: Mapping[str, str] | None = None,
        *,
        keys: Sequence[str] | None = None,
        actor: str | None = None,
    ) -> int:
        """Move instances (``keys``, or every one) to ``to_version``: each state
        through ``state_map`` (unmapped: the same path), into its leaf; recorded
        as a ``migrated`` entry; timers re-armed for the new states. Every
        instance's new state is checked before any moves; how many moved."""
        target = self.definition(machine, to_version)
        mapping = dict(state_map or {})
        chosen = keys if keys is not None else [i.key for i in self.instances(machine)]
        rows = [r for r in (self.engine.store.get_instance(machine, k) for k in chosen) if r]
        for row in rows:
            new = mapping.get(row.state, row.state)
            if new not in target.states:
                raise InvalidOption(
                    f"{machine} {row.key!r} is in {row.state}, which version {to_version} does "
                    f"not have; map it: state_map={{{row.state!r}: 'a state of version "
                    f"{to_version}'}}"
                )
        moved = 0
        for listed in rows:
            with self.engine.transaction() as tx:
                locked = tx.lock_instance(machine, listed.key)
                if locked is None or locked.version == to_version:
                    continue
                row = locked
                leaf = target.leaf(mapping.get(row.state, row.state))
                seq = row.seq + 1
                migrated = InstanceRow(
                    machine,
                    row.key,
                    to_version,
                    leaf,
                    row.context_json,
                    seq,
                    target.states[leaf].final,
                    row.created_at,
                    tx.now,
                )
                tx.update_instance(migrated, row.seq)
                self._known.pop((machine, row.key), None)
                detail = json.dumps({"from_version": row.version, "state_map": mapping})
                tx.append_history(
                    [
                        HistoryRow(
                            machine,
                            row.key,
                            seq,
                            tx.now,
                            "migrated",
                            None,
                            row.state,
                            leaf,
                            None,
                            row.context_json,
                            actor,
                            None,
                            to_version,
                            detail,
                        )
                    ]
                )
                tx.cancel_timers(machine, row.key, None)
                self._arm(tx, target, migrated, target.lineage(leaf))
                moved += 1
        return moved

    def retain(self, machine: str, keep_last: int | None, keep_days: float | None) -> None:
        """Keep each instance's last ``keep_last`` entries and/or those younger
        than ``keep_days``; older ones are pruned by maintenance (the oldest
        kept entry stands as the snapshot). Both None: keep everything."""
        if keep_last is not None and (
            isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1
        ):
            raise InvalidOption(f"keep_last must be a whole number from 1, not {keep_last!r}")
        if keep_days is not None and (
            isinstance(keep_days, bool)
            or not isinstance(keep_days, int | float)
            or not 0 < keep_days < 36_500
        ):
            raise InvalidOption(f"keep_days must be a number of days above 0, not {keep_days!r}")
        self.definition(machine)
        with self.engine.transaction() as tx:
            tx.save_retention(machine, keep_last, keep_days)

    # -- reads ---------------------------------------------------------------------------------

    def get(self, machine: str, key: str) -> Instance:
        row = self.engine.store.get_instance(machine, key)
        if row is None:
            raise InstanceNotFound(machine, key)
        return Instance.of(row)

    def instances(
        self,
        machine: str,
        state: str | None = None,
        *,
        after: str | None = None,
        limit: int | None = None,
    ) -> list[Instance]:
        """Instances by key (all, or ``limit`` after the key ``after``); ``state``:
        a leaf, or a superstate for every state under it."""
        rows: list[InstanceRow] = []
        page = 1_000 if limit is None else limit
        cursor = after
        while True:
            got = self.engine.store.list_instances(machine, state, cursor, page)
            rows += got
            if limit is not None or len(got) < page:
                return [Instance.of(r) for r in rows]
            cursor = got[-1].key

    def history(
        self, machine: str, key: str, *, since_seq: int = 0, last: int | None = None
    ) -> list[HistoryEntry]:
        self.get(machine, key)
        rows = self.engine.store.history(machine, key, since_seq, last)
        return [HistoryEntry.of(r) for r in rows]

    def refusals(self, machine: str, key: str, limit: int = REFUSALS_KEPT) -> list[Refusal]:
        return [Refusal.of(r) for r in self.engine.store.refusals(machine, key, limit)]

    # -- verification ------------------------------------------------------------------------

    def verify(self, machine: str, key: str) -> Verification:
        """Replay the history through the definition and compare: each entry
        with the transition it names, the end with the instance, the armed
        timers with the states that are active."""
        row = self.engine.store.get_instance(machine, key)
        if row is None:
            raise InstanceNotFound(machine, key)
        entries = self.engine.store.history(machine, key)
        timers = self.engine.store.timers_of(machine, key)
        problems = _replay(self, row, entries, timers, self.engine.clock.now())
        return Verification(machine, key, not problems, problems)

    def verify_all(self, machine: str | None = None) -> Iterator[Verification]:
        names = (
            [machine]
            if machine is not None
            else sorted({n for n, *_ in self.engine.store.machine_definitions()})
        )
        for name in names:
            for instance in self.instances(name):
                yield self.verify(name, instance.key)

    # -- listeners -------------------------------------------------------------------------------

    def listen(
        self, kind: str, fn: Listener, machine: str | None = None, state: str | None = None
    ) -> Callable[[], None]:
        if kind not in LISTENER_KINDS:
            raise InvalidOption(f"a listener is for one of {', '.join(LISTENER_KINDS)}")
        entry = (kind, machine, state, fn)
        self._listeners.append(entry)
        return lambda: self._listeners.remove(entry)

    def _tell(self, happened: Sequence[Happening]) -> None:
        for happening in happened:
            for kind, machine, state, fn in list(self._listeners):
                if kind != happening.kind or machine not in (None, happening.machine):
                    continue
                if state is not None and state not in (
                    happening.state,
                    happening.to_state if kind == "transition" else None,
                ):
                    continue
                try:
                    fn(happening)
                except Exception:
                    log.exception("a machine listener failed; the change stands")


def _resolved(value: Any, context: Mapping[str, Any], data: Mapping[str, Any], where: str) -> Any:
    found = resolve(value, context, data)
    if found is MISSING:
        raise _ActionError(f"{where}: the {value.source} has no {'.'.join(value.path)}")
    return copy.deepcopy(found)


def _job_key(machine: str, key: str, seq: int, state: str, moment: str, index: int) -> str:
    """The key of a job an action enqueues: from the instance, the entry and
    the action, so that the same action is never enqueued twice."""
    text = json.dumps([machine, key, seq, state, moment, index])
    return "machine:" + hashlib.sha256(text.encode()).hexdigest()[:40]


def _advance(
    definition: Definition,
    row: InstanceRow,
    outcome: Outcome,
    context_json: str,
    kind: str,
    event: str,
    data: dict[str, Any],
    actor: str | None,
    detail: dict[str, Any] | None,
    now: float,
) -> Advance:
    """The writes of an accepted ``outcome`` from ``row`` at ``now``."""
    assert outcome.transition is not None
    seq = row.seq + 1
    final = definition.states[outcome.state].final
    moved = InstanceRow(
        row.machine,
        row.key,
        row.version,
        outcome.state,
        context_json,
        seq,
        final,
        row.created_at,
        now,
    )
    entry = HistoryRow(
        row.machine,
        row.key,
        seq,
        now,
        kind,
        event,
        row.state,
        outcome.state,
        json.dumps(data),
        context_json,
        actor,
        outcome.transition.index,
        row.version,
        None if detail is None else json.dumps(detail),
    )
    cancel = None if final else [s for s in outcome.exited if definition.states[s].after]
    arm = [] if final else _timers(definition, moved, outcome.entered, now)
    return Advance(moved, row.seq, entry, cancel, arm)


def _timers(
    definition: Definition, row: InstanceRow, entered: Sequence[str], now: float
) -> list[TimerRow]:
    """The timers of the states ``entered``, due from ``now``."""
    return [
        TimerRow(
            None, row.machine, row.key, state, timer.event, now + timer.delay_ms / 1000, row.seq
        )
        for state, timer in timers_of(definition, entered)
    ]


def _happenings(
    moved: InstanceRow, outcome: Outcome, event: str, from_state: str
) -> list[Happening]:
    """What listeners hear of an accepted event: exits, the transition, entries."""
    return [
        *(_happening("exit", moved, s, outcome.context) for s in outcome.exited),
        _happening("transition", moved, None, outcome.context, event=event, from_state=from_state),
        *(_happening("enter", moved, s, outcome.context) for s in outcome.entered),
    ]


def _happening(
    kind: str,
    row: InstanceRow,
    state: str | None,
    context: Mapping[str, Any],
    *,
    event: str | None = None,
    reason: str | None = None,
    from_state: str | None = None,
) -> Happening:
    return Happening(
        kind=kind,
        machine=row.machine,
        key=row.key,
        seq=row.seq,
        event=event,
        from_state=from_state if kind == "transition" else None,
        to_state=row.state if kind == "transition" else None,
        state=state,
        context=copy.deepcopy(dict(context)),
        reason=reason,
    )


def _replay(
    runtime: MachineRuntime,
    row: InstanceRow,
    entries: Sequence[HistoryRow],
    timers: Sequence[TimerRow],
    now: float,
) -> list[str]:
    problems: list[str] = []
    if not entries:
        return ["no history entries"]
    first = entries[0]
    version = first.version
    definition = runtime.definition(row.machine, version)
    state = first.to_state
    context = json.loads(first.context_json)
    if first.seq == 1 and first.kind != "created":
        problems.append(f"seq 1 is {first.kind!r}, not 'created'")
    if first.kind == "created" and state != definition.leaf(definition.initial):
        problems.append(f"seq 1: created in {state}, not in the initial state")
    if state not in definition.states:
        return [*problems, f"seq {first.seq}: {state} is not a state of version {version}"]
    entered_at: dict[str, float | None] = {
        s: (first.at if first.kind == "created" else None) for s in definition.lineage(state)
    }
    recorded = {e.seq: e for e in entries}
    previous = first.seq
    for entry in entries[1:]:
        where = f"seq {entry.seq}"
        if entry.seq != previous + 1:
            problems.append(f"{where}: follows seq {previous} (history entries missing)")
        previous = entry.seq
        if entry.kind in ("event", "timer"):
            if entry.version != version:
                problems.append(f"{where}: recorded under version {entry.version}, not {version}")
            if entry.from_state != state:
                problems.append(
                    f"{where}: recorded from {entry.from_state}, but replay is in {state}"
                )
            transition = (
                definition.transitions[entry.transition]
                if entry.transition is not None
                and 0 <= entry.transition < len(definition.transitions)
                else None
            )
            if transition is None or transition.event != entry.event:
                problems.append(f"{where}: names no transition for {entry.event!r}")
            elif definition.states[state].final:
                problems.append(f"{where}: an event accepted in the final state {state}")
            else:
                source = next(
                    (s for s in definition.lineage(state) if s in transition.sources), None
                )
                if source is None:
                    problems.append(
                        f"{where}: transition #{transition.index} does not leave {state}"
                    )
                else:
                    data = json.loads(entry.data_json or "{}")
                    try:
                        replayed = update(transition, context, data)
                    except UpdateError as exc:
                        problems.append(f"{where}: the update cannot apply ({exc})")
                        replayed = context
                    exited, entered, leaf = moves(definition, state, source, transition.target)
                    if leaf != entry.to_state:
                        problems.append(
                            f"{where}: replay ends in {leaf}, the record says {entry.to_state}"
                        )
                    if replayed != json.loads(entry.context_json):
                        problems.append(f"{where}: replayed context differs from the record")
                    for s in exited:
                        entered_at.pop(s, None)
                    for s in entered:
                        entered_at[s] = entry.at
        elif entry.kind == "rolled_back":
            detail = json.loads(entry.detail_json or "{}")
            target = recorded.get(int(detail.get("to_seq", -1)))
            if target is None:
                problems.append(f"{where}: rolls back to seq {detail.get('to_seq')}, not kept")
            elif (target.to_state, json.loads(target.context_json)) != (
                entry.to_state,
                json.loads(entry.context_json),
            ):
                problems.append(f"{where}: the rollback does not restore seq {target.seq}")
            version = entry.version
            definition = runtime.definition(row.machine, version)
            entered_at = {s: entry.at for s in definition.lineage(entry.to_state)}
        elif entry.kind == "migrated":
            version = entry.version
            definition = runtime.definition(row.machine, version)
            if entry.to_state not in definition.states:
                problems.append(f"{where}: migrated to {entry.to_state}, not a state of v{version}")
                return problems
            entered_at = {s: entry.at for s in definition.lineage(entry.to_state)}
        else:
            problems.append(f"{where}: unexpected kind {entry.kind!r}")
        state, context = entry.to_state, json.loads(entry.context_json)
        if state not in definition.states:
            return [*problems, f"{where}: {state} is not a state of version {version}"]
    last = entries[-1]
    if (row.state, row.seq, row.version) != (state, last.seq, version):
        problems.append(
            f"the instance says {row.state} at seq {row.seq} (v{row.version}); "
            f"the history ends in {state} at seq {last.seq} (v{version})"
        )
    if json.loads(row.context_json) != context:
        problems.append("the instance's context differs from the history's last entry")
    if row.final != definition.states[state].final:
        problems.append(f"the instance's final flag is {row.final} in {state}")
    problems += _timer_problems(definition, state, entered_at, timers, now)
    return problems


def _timer_problems(
    definition: Definition,
    state: str,
    entered_at: Mapping[str, float | None],
    timers: Sequence[TimerRow],
    now: float,
) -> list[str]:
    problems = []
    expected: list[tuple[str, str, float | None]] = []
    if not definition.states[state].final:
        for s, timer in timers_of(definition, list(reversed(definition.lineage(state)))):
            at = entered_at.get(s)
            expected.append((s, timer.event, None if at is None else at + timer.delay_ms / 1000))
    # One state may have two timers of one event (after 1s and after 2s): each
    # expected timer takes one armed row, the one due when it should be if any.
    armed = [(t.state, t.event, t.due_at) for t in timers]
    for s, event, due in expected:
        if due is not None and due <= now:
            continue  # due: fired (or firing) already
        same = [a for a in armed if a[:2] == (s, event)]
        exact = [a for a in same if due is None or abs(a[2] - due) <= 0.001]
        if exact:
            armed.remove(exact[0])
        elif not same:
            problems.append(f"the timer {event!r} of {s} is not armed")
        else:
            problems.append(f"the timer {event!r} of {s} is due at {same[0][2]}, not {due}")
            armed.remove(same[0])
    active = {(s, event) for s, event, _ in expected}
    for s, event, due in armed:
        if due <= now:
            continue
        if (s, event) in active:
            problems.append(f"the timer {event!r} of {s} is armed once more than it should be")
        else:
            problems.append(f"a timer {event!r} is armed for {s}, which is not active")
    return problems
