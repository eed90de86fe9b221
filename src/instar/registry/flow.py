"""Flow control: how many jobs of a kind may run at once, and how often they
may start, across every worker and host.

- ``Limit(max=5)``: at most ``max`` jobs run at once (running, serving or
  stopping: the states that hold a lease). On a queue
  (``app.queue("emails", concurrency=5)``) it counts the queue's jobs; on a
  job (``@app.job(concurrency=Limit(key="user:{user_id}", max=1))``) it counts
  the jobs whose key, filled from their arguments at enqueue, is the same,
  whatever their kind. Without a key, the key is the job's name.
- ``Rate(100, per=60)``: at most ``count`` starts in ``per`` seconds, spaced
  evenly: one start every ``per / count`` seconds (the generic cell rate
  algorithm with no burst tolerance, ITU-T I.371), so no window of ``per``
  seconds holds more than ``count`` starts and nothing bursts at a boundary.
  On a queue, or on a job with an optional key as above.

Both are checked inside the claim, in the same statement that takes the jobs,
from what the jobs table says (the leased jobs, counted through their partial
index) and, for rates, the time each key may next start a job. A job held back
stays ``ready`` and is claimed as soon as its limit allows. Limits are declared
in code: a worker enforces the limits of the code it runs.
"""

from __future__ import annotations

import json
import math
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from instar.errors import ConfigurationError, PayloadError
from instar.registry.limits import MAX_NAME_BYTES

MAX_CONCURRENCY = 1_000_000
"""The largest ``max`` of a limit."""
MAX_RATE_COUNT = 1_000_000
"""The largest ``count`` of a rate."""
MAX_PERIOD = 366 * 86400.0
"""The longest ``per`` of a rate: a year, in seconds."""


def _template(key: str | None) -> tuple[str, ...]:
    """The argument names a key template uses; ``ConfigurationError`` for a
    template that is not text of plain ``{name}`` fields (no attribute, index,
    conversion or format spec: a key is built from values, never from code)."""
    if key is None:
        return ()
    if not isinstance(key, str) or not key or len(key.encode()) > MAX_NAME_BYTES:
        raise ConfigurationError(
            f"a limit's key must be text of 1 to {MAX_NAME_BYTES} bytes, got {key!r}"
        )
    names = []
    try:
        parsed = list(string.Formatter().parse(key))
    except ValueError as exc:
        raise ConfigurationError(f"limit key {key!r} is not a valid template: {exc}") from None
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if not field.isidentifier() or spec or conversion:
            raise ConfigurationError(
                f"limit key {key!r}: each field must be a plain argument name such as "
                f"{{user_id}}, got {{{field}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}}"
            )
        names.append(field)
    return tuple(names)


def fill_key(template: str, fields: tuple[str, ...], args: Mapping[str, Any], job: str) -> str:
    """The key of one job: ``template`` with each field replaced by the argument
    of that name (text as it is; other JSON values as compact JSON).
    ``PayloadError`` when an argument the key names is missing."""
    values = {}
    for name in fields:
        if name not in args:
            raise PayloadError(
                f"job {job!r}: its limit key {template!r} needs the argument {name!r}"
            )
        value = args[name]
        values[name] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    key = template.format_map(values)
    if len(key.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise PayloadError(
            f"job {job!r}: its limit key is longer than {MAX_NAME_BYTES} bytes ({key[:40]!r}...)"
        )
    return key


def _check_count(value: object, most: int, what: str) -> None:
    """``ConfigurationError`` unless ``value`` is a whole number (not a bool)
    from 1 to ``most``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ConfigurationError(f"{what} must be a whole number from 1 to {most:,}, got {value!r}")


@dataclass(frozen=True)
class Limit:
    """At most ``max`` jobs running at once per key (see the module)."""

    max: int
    key: str | None = None

    def __post_init__(self) -> None:
        _check_count(self.max, MAX_CONCURRENCY, "a concurrency limit")
        _template(self.key)

    @property
    def fields(self) -> tuple[str, ...]:
        return _template(self.key)


@dataclass(frozen=True)
class Rate:
    """At most ``count`` starts per ``per`` seconds, evenly spaced, per key
    (see the module)."""

    count: int
    per: float = 1.0
    key: str | None = None

    def __post_init__(self) -> None:
        _check_count(self.count, MAX_RATE_COUNT, "a rate's count")
        if (
            isinstance(self.per, bool)
            or not isinstance(self.per, int | float)
            or not math.isfinite(self.per)
            or not 0 < self.per <= MAX_PERIOD
        ):
            raise ConfigurationError(
                f"a rate's period must be a number of seconds above 0 and at most a year, "
                f"got {self.per!r}"
            )
        _template(self.key)

    @property
    def interval(self) -> float:
        """Seconds between two starts."""
        return self.per / self.count

    @property
    def fields(self) -> tuple[str, ...]:
        return _template(self.key)


def concurrency_limit(value: Limit | int | None) -> Limit | None:
    """A job's or queue's ``concurrency`` option as a Limit (an int is ``max``);
    ``ConfigurationError`` for anything else."""
    if value is None or isinstance(value, Limit):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Limit(value)
    raise ConfigurationError(
        f"concurrency must be an int or an instar.Limit, got {type(value).__name__} {value!r}"
    )


def rate_limit(value: Rate | None) -> Rate | None:
    """A job's or queue's ``rate`` option; ``ConfigurationError`` unless a Rate."""
    if value is None or isinstance(value, Rate):
        return value
    raise ConfigurationError(f"rate must be an instar.Rate, got {type(value).__name__} {value!r}")
