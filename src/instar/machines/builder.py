"""Machines written in Python: a small builder that writes the TOML form.

    order = Machine("order", version=1, initial="placed", context={"total": 0})
    order.event("pay", amount="number")
    order.state("placed", after=[("30m", "payment_timeout")])
    order.state("paid")
    order.state("delivered", final=True)
    order.transition("placed", "pay", "paid",
                     when=event("amount").ge(context("total")),
                     set={"paid": event("amount")})

Everything the builder takes is the TOML vocabulary (``instar.machines.definition``);
a guard is a Python function, kept by its name. ``app.machines.register(order)``
compiles and checks it exactly as it would the TOML file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

Guard = Callable[[Mapping[str, Any], Mapping[str, Any]], bool]
"""``guard(context, data) -> bool``: both arguments are copies."""


class Ref:
    """A path into the instance's context or the event's data."""

    def __init__(self, source: str, path: str) -> None:
        self.source = source
        self.path = path

    def raw(self) -> dict[str, str]:
        return {self.source: self.path}

    def _compare(self, op: str, other: object) -> dict[str, Any]:
        return {self.source: self.path, op: _raw_value(other)}

    def eq(self, other: object) -> dict[str, Any]:
        return self._compare("eq", other)

    def ne(self, other: object) -> dict[str, Any]:
        return self._compare("ne", other)

    def lt(self, other: object) -> dict[str, Any]:
        return self._compare("lt", other)

    def le(self, other: object) -> dict[str, Any]:
        return self._compare("le", other)

    def gt(self, other: object) -> dict[str, Any]:
        return self._compare("gt", other)

    def ge(self, other: object) -> dict[str, Any]:
        return self._compare("ge", other)

    def is_in(self, other: object) -> dict[str, Any]:
        return self._compare("in", other)

    def exists(self, present: bool = True) -> dict[str, Any]:
        return {self.source: self.path, "exists": present}


def context(path: str) -> Ref:
    """The instance's context at ``path`` (dotted keys)."""
    return Ref("context", path)


def event(path: str) -> Ref:
    """The event's data at ``path`` (dotted keys)."""
    return Ref("event", path)


def _raw_value(value: object) -> Any:
    if isinstance(value, Ref):
        return value.raw()
    if isinstance(value, dict):
        return {"literal": value}
    return value


def _raw_values(values: Mapping[str, object] | None) -> dict[str, Any]:
    return {str(k): _raw_value(v) for k, v in (values or {}).items()}


def enqueue(
    job: str, args: Mapping[str, object] | None = None, *, reply: str | None = None
) -> dict[str, Any]:
    """An entry or exit action: enqueue ``job``; its result comes back as ``reply``."""
    action: dict[str, Any] = {"enqueue": job, "args": _raw_values(args)}
    if reply is not None:
        action["reply"] = reply
    return action


def send(
    machine: str, key: str | Ref, event_name: str, data: Mapping[str, object] | None = None
) -> dict[str, Any]:
    """An entry or exit action: send ``event_name`` to instance ``key`` of ``machine``."""
    return {
        "send": event_name,
        "machine": machine,
        "key": _raw_value(key),
        "data": _raw_values(data),
    }


class Machine:
    """A machine definition under construction; see the module's example."""

    def __init__(
        self,
        name: str,
        version: int,
        *,
        initial: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        header: dict[str, Any] = {"name": name, "version": version}
        if initial is not None:
            header["initial"] = initial
        self._raw: dict[str, Any] = {
            "machine": header,
            "context": dict(context or {}),
            "events": {},
            "states": {},
            "transitions": [],
        }
        self.guards: dict[str, Guard] = {}
        self.problems: list[str] = []

    @property
    def name(self) -> str:
        return str(self._raw["machine"]["name"])

    def event(self, name: str, **fields: str) -> Machine:
        """Declare ``name``'s payload: field = JSON type (``number``, ``string`` …)."""
        self._raw["events"][name] = {"data": dict(fields)}
        return self

    def state(
        self,
        path: str,
        *,
        initial: str | None = None,
        final: bool = False,
        after: Iterable[tuple[str, str]] = (),
        enter: Sequence[Mapping[str, Any]] = (),
        exit: Sequence[Mapping[str, Any]] = (),
    ) -> Machine:
        """Add the state ``path`` (dotted: its parent must be added first).
        ``initial``: a compound state's initial child; ``after``: (delay, event)
        timers such as ("30m", "payment_timeout")."""
        parts = path.split(".")
        tree = self._raw["states"]
        for part in parts[:-1]:
            parent = tree.get(part)
            if not isinstance(parent, dict):
                self.problems.append(f"state {path}: its parent {part!r} is not added yet")
                return self
            tree = parent.setdefault("states", {})
        if parts[-1] in tree:
            self.problems.append(f"state {path}: added twice (duplicate name)")
            return self
        spec: dict[str, Any] = {}
        if initial is not None:
            spec["initial"] = initial
        if final:
            spec["final"] = True
        timers = [{"delay": d, "event": e} for d, e in after]
        if timers:
            spec["after"] = timers
        if enter:
            spec["enter"] = [dict(a) for a in enter]
        if exit:
            spec["exit"] = [dict(a) for a in exit]
        tree[parts[-1]] = spec
        return self

    def transition(
        self,
        source: str | Sequence[str],
        on: str,
        to: str,
        *,
        when: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        guard: Guard | None = None,
        set: Mapping[str, object] | None = None,
        add: Mapping[str, object] | None = None,
        unset: Sequence[str] = (),
    ) -> Machine:
        """``source --on--> to``, tried in the order added. ``when``: conditions
        built with ``context(path)`` / ``event(path)`` (``.ge(...)`` …), all of
        which must hold; ``guard``: a named Python function; ``set``, ``add``,
        ``unset``: the context update."""
        spec: dict[str, Any] = {
            "from": source if isinstance(source, str) else list(source),
            "on": on,
            "to": to,
        }
        if when is not None:
            spec["when"] = dict(when) if isinstance(when, Mapping) else [dict(w) for w in when]
        if guard is not None:
            name = getattr(guard, "__name__", "")
            if not name or name == "<lambda>":
                self.problems.append(
                    f"transition {source} --{on}--> {to}: a guard must be a named function "
                    "(def), so that every process finds it by name"
                )
            elif self.guards.get(name, guard) is not guard:
                self.problems.append(f"two different guards are named {name!r}")
            else:
                self.guards[name] = guard
                spec["guard"] = name
        if set:
            spec["set"] = _raw_values(set)
        if add:
            spec["add"] = _raw_values(add)
        if unset:
            spec["unset"] = list(unset)
        self._raw["transitions"].append(spec)
        return self

    def raw(self) -> dict[str, Any]:
        """The definition in its TOML form, as data."""
        return self._raw
