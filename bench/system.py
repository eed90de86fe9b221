"""What the machine says about CPU and memory, read from /proc (Linux).

CPU of a run is split three ways: the worker processes (the bench's children,
from ``getrusage(RUSAGE_CHILDREN)`` once they are reaped: exact, exited
processes included), the PostgreSQL server (every process named ``postgres``,
its own time plus that of the children it has reaped, so backends that exit
during the run still count) and the rest of the machine (``/proc/stat``).
Every figure is in CPU seconds; the machine offers ``cores x wall`` of them.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PROC = Path("/proc")


def _stat_fields(pid: int | str) -> list[str] | None:
    """/proc/<pid>/stat after the command name (which may hold spaces)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def process_cpu_seconds(pid: int, *, with_children: bool = False) -> float | None:
    """utime + stime of ``pid`` (and of the children it has reaped)."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # Fields 14-17 of stat(5): utime, stime, cutime, cstime; index 0 here is field 3.
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICKS


def postgres_cpu_seconds() -> float | None:
    """CPU seconds used so far by every ``postgres`` process on this machine, None
    if there is none (the server runs elsewhere, or /proc hides it)."""
    total, found = 0.0, False
    try:
        entries = list(PROC.iterdir())
    except OSError:
        return None
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if comm != "postgres":
            continue
        seconds = process_cpu_seconds(int(entry.name), with_children=True)
        if seconds is not None:
            total += seconds
            found = True
    return total if found else None


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        first = (PROC / "stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return 0.0, 0.0
    values = [int(v) for v in first[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice; guest time
    # is already counted in user, so only the first eight add up.
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    busy = sum(values[:8]) - idle
    return busy / TICKS, idle / TICKS


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` (VmRSS), None once it has gone."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass(frozen=True)
class CpuSplit:
    """Where the machine's CPU went during one run, in CPU seconds."""

    wall: float
    workers: float
    server: float | None  # None: the PostgreSQL server is not visible here
    busy: float  # the whole machine
    cores: int

    @property
    def other(self) -> float:
        return max(0.0, self.busy - self.workers - (self.server or 0.0))

    @property
    def idle(self) -> float:
        return max(0.0, self.cores * self.wall - self.busy)

    def share(self, seconds: float) -> str:
        available = self.cores * self.wall
        return f"{seconds:.1f} s ({seconds / available:.0%})" if available > 0 else "?"

    def describe(self, worker_label: str = "workers") -> str:
        server = (
            "server not visible" if self.server is None else f"postgres {self.share(self.server)}"
        )
        return (
            f"CPU of {self.cores} cores x {self.wall:.1f} s: {worker_label} "
            f"{self.share(self.workers)}, {server}, other {self.share(self.other)}, "
            f"idle {self.share(self.idle)}"
        )


class CpuMeter:
    """Snapshots taken before a run's processes start and after they are all reaped."""

    def __init__(self, *, server: bool) -> None:
        self.server = server
        self.start_wall = time.monotonic()
        self.start_children = children_cpu_seconds()
        self.start_server = postgres_cpu_seconds() if server else None
        self.start_busy = machine_cpu_seconds()[0]

    def stop(self) -> CpuSplit:
        server = None
        if self.server and self.start_server is not None:
            now = postgres_cpu_seconds()
            server = None if now is None else now - self.start_server
        return CpuSplit(
            wall=time.monotonic() - self.start_wall,
            workers=children_cpu_seconds() - self.start_children,
            server=server,
            busy=machine_cpu_seconds()[0] - self.start_busy,
            cores=os.cpu_count() or 1,
        )
