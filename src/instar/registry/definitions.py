"""A registered handler, what Instar learns about it, and the registry of them.

A definition knows nothing of any App: it is the handler, its name and its
options. The App binds definitions to itself (``resize.enqueue(...)``).
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from instar.errors import ConfigurationError, InvalidOption, PayloadError, UnknownJob
from instar.models import FlowLimitInfo
from instar.periodic import Schedule
from instar.registry.arguments import ArgumentTypes, argument_types
from instar.registry.flow import Limit, Rate, fill_key
from instar.registry.limits import MAX_NAME_BYTES, check_name, check_priority
from instar.retry import Retry
from instar.store.contract import FlowLimits


@dataclass(frozen=True)
class JobOptions:
    """How jobs of one definition run. ``lease`` and ``timeout`` are seconds;
    ``pause_timeout`` is how long a paused job waits for a person (24 h);
    ``schedule``: when maintenance enqueues one, for a periodic job;
    ``concurrency`` and ``rate``: the job's flow control (``instar.registry.flow``)."""

    queue: str = "default"
    lease: float = 30.0
    timeout: float | None = None
    retry: Retry = field(default_factory=Retry)
    priority: int = 0
    pause_timeout: float = 86400.0
    service: bool = False
    schedule: Schedule | None = None
    concurrency: Limit | None = None
    rate: Rate | None = None

    def __post_init__(self) -> None:
        """Raises ``ConfigurationError`` for a queue name, priority or duration outside
        the limits (``instar.registry.limits``). Numbers are kept as ints and
        floats, however given (``lease=5`` is 5.0, a numpy integer priority an
        int), so jobs of every kind carry one type of each."""
        check_name(self.queue, "queue", for_code=True)
        object.__setattr__(self, "priority", check_priority(self.priority, for_code=True))
        object.__setattr__(self, "lease", _seconds("lease", self.lease))
        if self.timeout is not None:
            object.__setattr__(self, "timeout", _seconds("timeout", self.timeout))
        object.__setattr__(self, "pause_timeout", _seconds("pause_timeout", self.pause_timeout))


def _seconds(what: str, value: object) -> float:
    """A duration in a definition as a float: a positive, finite number of seconds
    (an int too large for a float is refused, not raised as ``OverflowError``)."""
    seconds = math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError):  # an int past float's range
            seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigurationError(
            f"{what} must be a positive, finite number of seconds, got {value!r:.40}"
        )
    return seconds


class JobDefinition:
    """A handler registered under a name.

    Handlers take their arguments as keywords. If the first parameter is named
    ``ctx`` (or annotated ``instar.Context``) it receives the job's context.
    """

    def __init__(self, fn: Callable[..., Any], name: str, options: JobOptions) -> None:
        self.fn = fn
        self.name = check_name(name, "job name", for_code=True)
        self.options = options
        self.is_async = inspect.iscoroutinefunction(fn)
        self._signature = inspect.signature(fn)
        params = list(self._signature.parameters.values())
        self.takes_context = bool(params) and (
            params[0].name == "ctx" or _is_context_annotation(params[0].annotation)
        )
        self._arg_signature = self._signature.replace(
            parameters=params[1:] if self.takes_context else params
        )
        for limit, kind in ((options.concurrency, Limit), (options.rate, Rate)):
            if limit is None:
                continue
            if not isinstance(limit, kind):
                option = "concurrency" if kind is Limit else "rate"
                raise ConfigurationError(
                    f"job {self.name!r}: {option} must be an instar.{kind.__name__}"
                    f"{' or an int' if kind is Limit else ''}, got {limit!r}"
                )
            takes_any = any(
                p.kind is p.VAR_KEYWORD for p in self._arg_signature.parameters.values()
            )
            missing = [f for f in limit.fields if f not in self._arg_signature.parameters]
            if missing and not takes_any:
                raise ConfigurationError(
                    f"job {self.name!r}: its limit key {limit.key!r} names {missing[0]!r}, "
                    f"which is not a parameter of {self.name}{self._arg_signature}"
                )
        self._defaults = {
            p.name: p.default
            for p in self._arg_signature.parameters.values()
            if p.default is not p.empty
        }
        self._accepted_names: set[frozenset[str]] = set()
        self._types: ArgumentTypes | None = None
        self._types_built = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the handler directly, in this process, with no job involved."""
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<JobDefinition {self.name} queue={self.options.queue}>"

    def flow_keys(self, args: Mapping[str, Any]) -> tuple[str | None, str | None]:
        """The (concurrency key, rate key) of a job with these arguments: its
        limits' key templates filled in, or its name where a limit has no key;
        None where it has no such limit. ``PayloadError`` (``fill_key``)."""
        if self.options.concurrency is None and self.options.rate is None:
            return None, None
        keys: list[str | None] = []
        for limit in (self.options.concurrency, self.options.rate):
            if limit is None:
                keys.append(None)
            elif limit.key is None:
                keys.append(self.name)
            else:
                values = {**self._defaults, **args} if self._defaults else args
                keys.append(fill_key(limit.key, limit.fields, values, self.name))
        return keys[0], keys[1]

    def check_arguments(self, args: Mapping[str, Any]) -> None:
        """Refuse arguments the handler could never accept, before anything is
        stored (``PayloadError``): names that do not bind to its parameters
        (``check_names``), and values that do not fit their annotations
        (``check_types``)."""
        self.check_names(args)
        self.check_types(args)

    def check_names(self, args: Mapping[str, Any]) -> None:
        """``PayloadError`` unless the keywords bind to the handler's parameters.

        Whether keywords bind depends only on their names, so a set of names
        that bound once is remembered (bulk enqueues repeat the same names)."""
        names = frozenset(args)
        if names in self._accepted_names:
            return
        try:
            self._arg_signature.bind(**args)
        except TypeError as exc:
            raise PayloadError(
                f"arguments for job {self.name!r} do not match "
                f"{self.name}{self._arg_signature}: {exc}"
            ) from None
        self._accepted_names.add(names)

    def check_types(self, args: Mapping[str, Any]) -> None:
        """``PayloadError`` naming each argument whose value does not fit its
        annotation (``instar.registry.arguments``); free for a handler without
        annotations. Changes nothing."""
        if not self._types_built:
            params = list(self._arg_signature.parameters.values())
            self._types = argument_types(self.fn, params)
            self._types_built = True
        if self._types is not None:
            self._types.check(args, self.name)


def _is_context_annotation(annotation: Any) -> bool:
    """``instar.Context``, by name: this layer does not import the context."""
    if isinstance(annotation, str):
        return annotation in {"Context", "instar.Context", "instar.context.Context"}
    return (
        getattr(annotation, "__name__", None) == "Context"
        and getattr(annotation, "__module__", None) == "instar.context"
    )


class Registry(Mapping[str, JobDefinition]):
    """Definitions by name: what a worker can run and what an App can enqueue."""

    def __init__(self) -> None:
        self._by_name: dict[str, JobDefinition] = {}
        self.queue_limits: dict[str, tuple[Limit | None, Rate | None]] = {}
        """Flow control of queues, by queue name (``App.queue``)."""

    def __getitem__(self, name: str) -> JobDefinition:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def add(self, definition: JobDefinition) -> None:
        """Register ``definition``; ``ConfigurationError`` if its name is taken."""
        if definition.name in self._by_name:
            raise ConfigurationError(f"a job named {definition.name!r} is registered already")
        self._by_name[definition.name] = definition

    def update(self, definitions: Mapping[str, JobDefinition]) -> None:
        """Register every definition of another registry (a worker that serves
        handlers registered on another App), and its queues' limits."""
        for definition in definitions.values():
            self.add(definition)
        if isinstance(definitions, Registry):
            for queue, limits in definitions.queue_limits.items():
                if self.queue_limits.get(queue, limits) != limits:
                    raise ConfigurationError(
                        f"queue {queue!r} is declared with other limits already"
                    )
                self.queue_limits[queue] = limits

    def declared_limits(self) -> list[FlowLimitInfo]:
        """The limits of these definitions and queues, as ``instar queues`` shows them."""
        found = []
        for name, definition in self._by_name.items():
            limit, rate = definition.options.concurrency, definition.options.rate
            if limit is not None or rate is not None:
                found.append(_info("job", name, limit, rate))
        for queue, (limit, rate) in self.queue_limits.items():
            found.append(_info("queue", queue, limit, rate))
        return found

    def flow_limits(self) -> FlowLimits | None:
        """The limits a worker of these definitions enforces when it claims, or
        None when there are none."""
        jobs = {
            name: (
                None if d.options.concurrency is None else d.options.concurrency.max,
                None if d.options.rate is None else d.options.rate.interval,
            )
            for name, d in self._by_name.items()
            if d.options.concurrency is not None or d.options.rate is not None
        }
        queues = {
            queue: (None if limit is None else limit.max, None if rate is None else rate.interval)
            for queue, (limit, rate) in self.queue_limits.items()
            if limit is not None or rate is not None
        }
        return FlowLimits(jobs, queues) if jobs or queues else None

    def find(self, job: JobDefinition | str) -> JobDefinition:
        """A definition by its full name, or by its function's name when that is
        unambiguous; ``UnknownJob`` otherwise."""
        if isinstance(job, JobDefinition):
            return job
        if not isinstance(job, str):
            raise InvalidOption(f"a job is named by a str, got {type(job).__name__}")
        found = self._by_name.get(job)
        if found is not None:
            return found
        by_short_name = [d for d in self._by_name.values() if d.fn.__name__ == job]
        if len(by_short_name) == 1:
            return by_short_name[0]
        if len(job.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise UnknownJob(job[:40] + "…", list(self._by_name))
        raise UnknownJob(job, list(self._by_name))


def _info(kind: str, name: str, limit: Limit | None, rate: Rate | None) -> FlowLimitInfo:
    return FlowLimitInfo(
        kind,
        name,
        None if limit is None else limit.max,
        None if limit is None else limit.key,
        None if rate is None else rate.count,
        None if rate is None else rate.per,
        None if rate is None else rate.key,
    )
