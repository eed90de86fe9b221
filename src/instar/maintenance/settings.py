"""What every maintenance service shares: how much one pass may take on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SweepSettings:
    batch: int = 1000
    """Rows one pass reads at most; the rest wait for the next pass."""


class Service(Protocol):
    """A maintenance service: one pass over what is due, returning how many jobs moved."""

    name: str

    def run_once(self) -> int: ...
