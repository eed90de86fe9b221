"""``app.machines``: user-defined durable state machines, sync and async.

    m = app.machines
    m.register(order)                                  # a builder Machine
    m.register_file("machines/agent.toml", guards={...})
    m.create("order", key="A-1001", context={"total": 120})
    r = m.send("order", "A-1001", "pay", {"amount": 120}, idempotency_key="evt_42")
    m.get / m.history / m.rollback / m.verify / m.diagram / m.instances / m.counts

Every call has an ``_async`` twin that runs it off the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from instar.diagram import render
from instar.machines.builder import Guard, Machine
from instar.machines.definition import Definition
from instar.machines.records import (
    Happening,
    HistoryEntry,
    Instance,
    Refusal,
    SendResult,
    Verification,
)
from instar.machines.runtime import Listener, MachineRuntime
from instar.machines.toml_format import located, read_file, read_text
from instar.vocabulary import Actor


class Machines:
    """The durable machines of one App (see the module's example)."""

    def __init__(self, runtime: MachineRuntime) -> None:
        self.runtime = runtime

    # -- definitions -------------------------------------------------------------------

    def register(
        self, machine: Machine | Mapping[str, Any], *, guards: Mapping[str, Guard] | None = None
    ) -> Definition:
        """Check and keep a definition (a builder ``Machine`` or its raw form);
        ``InvalidMachine`` lists every problem, ``DefinitionConflict`` refuses a
        different text under a registered (name, version). Opens the database."""
        if isinstance(machine, Machine):
            known = {**machine.guards, **(guards or {})}
            return self.runtime.register(
                machine.raw(),
                locate=_builder_locate(machine.name),
                guards=known,
                problems=machine.problems,
            )
        return self.runtime.register(machine, locate=located(machine), guards=guards)

    def register_file(
        self, path: str | Path, *, guards: Mapping[str, Guard] | None = None
    ) -> Definition:
        """Register the TOML file ``path``; problems name its lines."""
        raw, locate = read_file(path)
        return self.runtime.register(raw, locate=locate, guards=guards)

    def register_text(
        self, text: str, *, source: str = "<text>", guards: Mapping[str, Guard] | None = None
    ) -> Definition:
        raw, locate = read_text(text, source)
        return self.runtime.register(raw, locate=locate, guards=guards)

    def use_guards(self, machine: Machine | str, guards: Mapping[str, Guard] | None = None) -> None:
        """Make a machine's guards known to this process without registering it
        (nothing is opened): a process that sends events, delivers its jobs'
        replies or fires its timers needs the guards of the transitions it
        takes, and a guard it does not know refuses the event (``guard_error``).
        For a worker module whose database comes from the command line."""
        if isinstance(machine, Machine):
            self.runtime.use_guards(machine.name, {**machine.guards, **(guards or {})})
        else:
            self.runtime.use_guards(machine, guards or {})

    def definition(self, name: str, version: int | None = None) -> Definition:
        return self.runtime.definition(name, version)

    def definitions(self) -> list[tuple[str, int]]:
        """(name, version) of every definition registered in the database."""
        return [(n, v) for n, v, *_ in self.runtime.engine.store.machine_definitions()]

    def diagram(
        self,
        name: str,
        format: Literal["mermaid", "dot", "table"] = "mermaid",
        *,
        instance: str | None = None,
        version: int | None = None,
    ) -> str:
        """The machine drawn (nested states as composite states, moves labelled
        with their events); with ``instance``, its current state highlighted."""
        current = None
        if instance is not None:
            found = self.get(name, instance)
            current, version = found.state, found.version
        return render(format, self.runtime.definition(name, version).table(), current=current)

    # -- instances -------------------------------------------------------------------------

    def create(
        self,
        machine: str,
        key: str,
        context: Mapping[str, Any] | None = None,
        *,
        version: int | None = None,
        actor: str | None = Actor.APP,
    ) -> Instance:
        return self.runtime.create(machine, key, context, version=version, actor=actor)

    def send(
        self,
        machine: str,
        key: str,
        event: str,
        data: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        expect_seq: int | None = None,
        actor: str | None = Actor.APP,
    ) -> SendResult:
        return self.runtime.send(
            machine,
            key,
            event,
            data,
            idempotency_key=idempotency_key,
            expect_seq=expect_seq,
            actor=actor,
        )

    def get(self, machine: str, key: str) -> Instance:
        return self.runtime.get(machine, key)

    def instances(
        self,
        machine: str,
        state: str | None = None,
        *,
        after: str | None = None,
        limit: int | None = None,
    ) -> list[Instance]:
        return self.runtime.instances(machine, state, after=after, limit=limit)

    def counts(self, machine: str) -> dict[str, int]:
        """Instances per state: each leaf, and each superstate the sum of its leaves."""
        leaves = self.runtime.engine.store.count_instances(machine)
        definition = self.runtime.definition(machine)
        totals: dict[str, int] = {}
        for leaf, count in leaves.items():
            lineage = definition.lineage(leaf) if leaf in definition.states else [leaf]
            for state in lineage:
                totals[state] = totals.get(state, 0) + count
        return totals

    def history(
        self, machine: str, key: str, *, since_seq: int = 0, last: int | None = None
    ) -> list[HistoryEntry]:
        return self.runtime.history(machine, key, since_seq=since_seq, last=last)

    def refusals(self, machine: str, key: str, limit: int = 100) -> list[Refusal]:
        return self.runtime.refusals(machine, key, limit)

    def rollback(
        self, machine: str, key: str, *, to_seq: int, reason: str, actor: str | None = Actor.APP
    ) -> Instance:
        return self.runtime.rollback(machine, key, to_seq, reason, actor=actor)

    def migrate(
        self,
        machine: str,
        *,
        to_version: int,
        state_map: Mapping[str, str] | None = None,
        keys: Sequence[str] | None = None,
        actor: str | None = Actor.APP,
    ) -> int:
        return self.runtime.migrate(machine, to_version, state_map, keys=keys, actor=actor)

    def retain(
        self, machine: str, *, keep_last: int | None = None, keep_days: float | None = None
    ) -> None:
        self.runtime.retain(machine, keep_last, keep_days)

    def verify(self, machine: str, key: str) -> Verification:
        return self.runtime.verify(machine, key)

    def verify_all(self, machine: str | None = None) -> Iterator[Verification]:
        return self.runtime.verify_all(machine)

    # -- listeners ---------------------------------------------------------------------------

    def on_enter(
        self, machine: str | None = None, state: str | None = None
    ) -> Callable[[Listener], Listener]:
        """``@app.machines.on_enter("order", "paid")``: called after the commit
        of every entry into the state (``Happening``); it cannot change it."""
        return self._on("enter", machine, state)

    def on_exit(
        self, machine: str | None = None, state: str | None = None
    ) -> Callable[[Listener], Listener]:
        return self._on("exit", machine, state)

    def on_transition(
        self, machine: str | None = None, state: str | None = None
    ) -> Callable[[Listener], Listener]:
        """Every accepted event (``state``: only those that end in it)."""
        return self._on("transition", machine, state)

    def on_refusal(self, machine: str | None = None) -> Callable[[Listener], Listener]:
        return self._on("refusal", machine, None)

    def _on(
        self, kind: str, machine: str | None, state: str | None
    ) -> Callable[[Listener], Listener]:
        def decorate(fn: Listener) -> Listener:
            self.runtime.listen(kind, fn, machine, state)
            return fn

        return decorate

    # -- async twins -------------------------------------------------------------------------

    async def register_async(
        self, machine: Machine | Mapping[str, Any], *, guards: Mapping[str, Guard] | None = None
    ) -> Definition:
        return await asyncio.to_thread(self.register, machine, guards=guards)

    async def register_file_async(
        self, path: str | Path, *, guards: Mapping[str, Guard] | None = None
    ) -> Definition:
        return await asyncio.to_thread(self.register_file, path, guards=guards)

    async def register_text_async(
        self, text: str, *, source: str = "<text>", guards: Mapping[str, Guard] | None = None
    ) -> Definition:
        return await asyncio.to_thread(self.register_text, text, source=source, guards=guards)

    async def definition_async(self, name: str, version: int | None = None) -> Definition:
        return await asyncio.to_thread(self.definition, name, version)

    async def definitions_async(self) -> list[tuple[str, int]]:
        return await asyncio.to_thread(self.definitions)

    async def create_async(
        self, machine: str, key: str, context: Mapping[str, Any] | None = None, **options: Any
    ) -> Instance:
        return await asyncio.to_thread(self.create, machine, key, context, **options)

    async def send_async(
        self,
        machine: str,
        key: str,
        event: str,
        data: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> SendResult:
        return await asyncio.to_thread(self.send, machine, key, event, data, **options)

    async def get_async(self, machine: str, key: str) -> Instance:
        return await asyncio.to_thread(self.get, machine, key)

    async def instances_async(
        self, machine: str, state: str | None = None, **options: Any
    ) -> list[Instance]:
        return await asyncio.to_thread(self.instances, machine, state, **options)

    async def counts_async(self, machine: str) -> dict[str, int]:
        return await asyncio.to_thread(self.counts, machine)

    async def history_async(self, machine: str, key: str, **options: Any) -> list[HistoryEntry]:
        return await asyncio.to_thread(self.history, machine, key, **options)

    async def refusals_async(self, machine: str, key: str, limit: int = 100) -> list[Refusal]:
        return await asyncio.to_thread(self.refusals, machine, key, limit)

    async def rollback_async(
        self, machine: str, key: str, *, to_seq: int, reason: str, **options: Any
    ) -> Instance:
        return await asyncio.to_thread(
            self.rollback, machine, key, to_seq=to_seq, reason=reason, **options
        )

    async def migrate_async(self, machine: str, **options: Any) -> int:
        return await asyncio.to_thread(self.migrate, machine, **options)

    async def retain_async(self, machine: str, **options: Any) -> None:
        await asyncio.to_thread(self.retain, machine, **options)

    async def verify_async(self, machine: str, key: str) -> Verification:
        return await asyncio.to_thread(self.verify, machine, key)

    async def verify_all_async(self, machine: str | None = None) -> list[Verification]:
        return await asyncio.to_thread(lambda: list(self.verify_all(machine)))

    async def diagram_async(self, name: str, **options: Any) -> str:
        return await asyncio.to_thread(self.diagram, name, **options)


def _builder_locate(name: str) -> Callable[[str], str]:
    def locate(where: str) -> str:
        if where.startswith("states."):
            return f"{name}: state {where.removeprefix('states.')}"
        if where.startswith("transitions."):
            return f"{name}: transition #{where.removeprefix('transitions.')}"
        return f"{name}: {where}"

    return locate


__all__ = ["Happening", "Machines"]
