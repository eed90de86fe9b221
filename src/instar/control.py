"""Control flow from a handler's context to its worker.

These derive from BaseException on purpose: a handler's ``except Exception``
must not swallow them, as it must not swallow asyncio's cancellation.
"""

from __future__ import annotations

from typing import Any


class Suspend(BaseException):
    """End this run; the job is suspended until ``wake_at`` (epoch seconds), or
    until what it waits for happens: the awakeable ``awaiting`` is settled, or
    every job in ``joining`` has ended. ``detail`` goes into the timeline."""

    def __init__(
        self,
        wake_at: float | None,
        detail: dict[str, Any],
        *,
        awaiting: str | None = None,
        joining: tuple[int, ...] = (),
    ) -> None:
        super().__init__(detail)
        self.wake_at = wake_at
        self.detail = detail
        self.awaiting = awaiting
        self.joining = joining


class PauseNow(BaseException):
    """End this run at a checkpoint because someone asked to pause the job."""


class CancelNow(BaseException):
    """End this run at a checkpoint because someone asked to cancel the job."""


class LeaseLost(BaseException):
    """This worker no longer holds the job (it was orphaned and claimed again)."""
