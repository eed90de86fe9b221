"""The retry policy and its backoff: pure functions, no I/O."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from instar.errors import ConfigurationError


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
        if self.max_attempts < 1:
            raise ConfigurationError(
                f"Retry.max_attempts must be at least 1, got {self.max_attempts}"
            )
        if self.initial_interval < 0 or self.max_interval < 0:
            raise ConfigurationError("Retry intervals must not be negative")
        if self.factor < 1:
            raise ConfigurationError(f"Retry.factor must be at least 1, got {self.factor}")
        if not 0 <= self.jitter <= 1:
            raise ConfigurationError(f"Retry.jitter must be between 0 and 1, got {self.jitter}")
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
        base = min(self.max_interval, self.initial_interval * self.factor ** (attempt - 1))
        if not self.jitter:
            return base
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, base * (1 + spread))
