"""The supervisor of ``instar worker --processes``, in this process: exit codes,
and a fork refused midway."""

from __future__ import annotations

import multiprocessing
import signal
import time
from typing import Any

import pytest

from instar.worker.processes import ProcessEnd, exit_code, run_processes


def test_the_exit_code_is_the_first_failure_and_a_signal_counts_as_128_plus_it() -> None:
    def end(code: int) -> ProcessEnd:
        return ProcessEnd(code, None)

    assert exit_code([end(0), end(0)]) == 0
    assert exit_code([end(0), end(3), end(1)]) == 3
    assert exit_code([end(-signal.SIGKILL), end(1)]) == 128 + signal.SIGKILL


def test_a_fork_refused_midway_stops_the_children_already_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fork = multiprocessing.get_context("fork")
    start = fork.Process.start
    started: list[multiprocessing.process.BaseProcess] = []

    def start_twice(self: multiprocessing.process.BaseProcess) -> None:
        if len(started) == 2:
            raise OSError(11, "Resource temporarily unavailable")
        start(self)
        started.append(self)

    def sleep(index: int) -> dict[str, Any]:
        time.sleep(60)  # until the parent stops it
        return {}

    monkeypatch.setattr(fork.Process, "start", start_twice)
    with pytest.raises(OSError, match="Resource temporarily unavailable"):
        run_processes(3, sleep, burst=True)
    assert [child.exitcode for child in started] == [-signal.SIGTERM] * 2, "stopped, not done"
    assert multiprocessing.active_children() == [], "and reaped"
