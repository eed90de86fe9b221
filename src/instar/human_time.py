"""Durations and times as a person reads them: ``0.08s``, ``4m 05s``, a UTC
time to the millisecond. The CLI, the demo (through ``instar.display``) and a
worker's job log share them; this module needs no Rich, so a worker process
does not load the terminal code to write its log.
"""

from __future__ import annotations

from datetime import UTC, datetime


def duration(seconds: float) -> str:
    """A duration for people: ``0.08s``, ``12.3s``, ``4m 05s``, ``2h 03m``, ``3d 04h``."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def moment(at: datetime, now: datetime | None = None) -> str:
    """A time for people, in UTC to the millisecond; with ``now``, how far away it is
    (``in 4m 10s``, ``3.20s ago``)."""
    text = at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"
    if now is None:
        return text
    ahead = (at - now).total_seconds()
    return f"{text} (in {duration(ahead)})" if ahead >= 0 else f"{text} ({duration(-ahead)} ago)"
