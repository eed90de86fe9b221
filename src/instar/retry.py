"""The retry policy and its backoff: pure functions, no I/O."""

from __future__ import annotations

import contextlib
import math
import random
from dataclasses import dataclass
from typing import Literal

from instar.errors import ConfigurationError

MAX_ATTEMPTS = 2**31 - 1
"""The most attempts a policy may allow: attempts are 32-bit integers in the database."""

MAX_INTERVAL = 3650 * 86400.0
"""The longest wait between two attempts, in seconds (ten years, the longest
delay of an enqueue, ``instar.registry.limits.MAX_DELAY``): a later time could
not be read back as a date."""


@dataclass(frozen=True)
class Retry:
    """How often a failing job is tried and how long it waits between tries.

    ``max_attempts`` counts every run, the first one included. The delay before
    attempt n+1 is ``min(max_interval, initial_interval * factor**(n-1))``,
    spread by ``jitter`` (0.1 = up to 10 % either way) so that jobs failing
    together do not all retry in the same instant.
    """

    max_attempts: int = 3
    initial_interval: float = 1.0
    factor: float = 2.0
    max_interval: float = 300.0
    jitter: float = 0.1
    on_exhausted: Literal["fail", "pause"] = "fail"
    fatal: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        """Raises ``ConfigurationError`` for a value outside its range (a bool, a
        str, NaN or infinity included). Numbers are kept as ints and floats."""
        attempts = self.max_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int):
            raise ConfigurationError(
                f"Retry.max_attempts must be a whole number, got {attempts!r:.40}"
            )
        if not 1 <= attempts <= MAX_ATTEMPTS:
            raise ConfigurationError(
                f"Retry.max_attempts must be from 1 to {MAX_ATTEMPTS:,}, got {attempts:,}"
            )
        object.__setattr__(self, "max_attempts", int(attempts))
        for name, low, high in (
            ("initial_interval", 0.0, MAX_INTERVAL),
            ("max_interval", 0.0, MAX_INTERVAL),
            ("factor", 1.0, math.inf),
            ("jitter", 0.0, 1.0),
        ):
            object.__setattr__(self, name, _number(name, getattr(self, name), low, high))
        if self.on_exhausted not in ("fail", "pause"):
            raise ConfigurationError(
                f"Retry.on_exhausted must be 'fail' or 'pause', got {self.on_exhausted!r}"
            )

    def is_retriable(self, error: BaseException) -> bool:
        """False for the types listed in ``fatal``, and for any error whose class says
        a re-run cannot succeed (``retriable = False``: ``Fatal``, a rejected or
        timed-out signal, a failed child, a result that is not JSON ...)."""
        if isinstance(error, self.fatal):
            return False
        return bool(getattr(type(error), "retriable", True))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        grown = math.inf  # past float's range: the cap
        with contextlib.suppress(OverflowError):
            grown = self.initial_interval * self.factor ** (attempt - 1)
        base = min(self.max_interval, grown)
        if not self.jitter:
            return base
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, base * (1 + spread))


def _number(name: str, value: object, low: float, high: float) -> float:
    """``value`` as a float from ``low`` to ``high`` (finite unless ``high`` is
    infinite); ``ConfigurationError`` otherwise."""
    number = math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError):  # an int past float's range
            number = float(value)
    if not (low <= number <= high and math.isfinite(number)):
        bound = "" if math.isinf(high) else f" to {high:,g}"
        raise ConfigurationError(
            f"Retry.{name} must be a finite number from {low:g}{bound}, got {value!r:.40}"
        )
    return number
