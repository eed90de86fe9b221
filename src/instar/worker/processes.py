"""Several worker processes from one command (``instar worker --processes N``).

The parent imports the application and migrates once, closes every connection,
then forks the children: each starts from the imports already made, so N
processes pay the import of psycopg, asyncio and the handlers' modules once,
not N times (a burst worker on PostgreSQL spends about 0.45 s of CPU starting
and stopping, 0.27 s of it importing, measured with ``-X importtime``).
Each child runs one worker of its own and reports its counts to the parent
as JSON, which adds them up. Dramatiq's ``--processes`` and huey's process
workers start their processes the same way.

Signals reach the children through the parent only: each child leads a
process group of its own, so a terminal's Ctrl-C is not delivered twice.
Every SIGINT or SIGTERM the parent receives is passed on to each child, so
the first asks each worker to finish its running jobs and the second ends
them at once, as with one worker. A child whose parent is gone (killed
outright) sends itself SIGTERM within a second.

Without ``--burst``, a child that ends on its own (a crash, an OOM kill)
makes the parent stop the others and exit with that child's failure, for the
process manager to restart the whole: a half-sized worker pool that looks
healthy is worse than a restart. With ``--burst``, children end as they find
nothing to do.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from types import FrameType
from typing import Any

from instar.errors import ConfigurationError

log = logging.getLogger("instar.worker")

FORWARDED = {signal.SIGINT, signal.SIGTERM}
"""The signals the parent passes on to every child."""

ORPHAN_CHECK_SECONDS = 1.0
"""How often a child looks whether its parent is still there."""


@dataclass(frozen=True)
class ProcessEnd:
    """How one child ended: ``code`` is its exit status (``-N`` when signal N
    killed it) and ``report`` what it sent before exiting (None if it sent
    nothing: it died first, or its worker raised)."""

    code: int
    report: dict[str, Any] | None


def exit_code(ends: list[ProcessEnd]) -> int:
    """The command's exit status: 0 when every child exited 0, else the first
    failure's (128 + N for a child killed by signal N, as a shell reports it)."""
    for end in ends:
        if end.code != 0:
            return 128 - end.code if end.code < 0 else end.code
    return 0


def run_processes(
    count: int, work: Callable[[int], dict[str, Any]], *, burst: bool
) -> list[ProcessEnd]:
    """Fork ``count`` children, each calling ``work(index)`` (0 to count - 1)
    and sending back the JSON-compatible dict it returns; wait for all of them.
    How each ended, in the children's order.

    The caller must hold no connection and run no other thread (a fork copies
    a lock held by another thread locked for good). ``ConfigurationError``
    where the platform cannot fork."""
    try:
        context = multiprocessing.get_context("fork")
    except ValueError:
        raise ConfigurationError(
            "--processes needs fork(), which this platform lacks; run one worker per process"
        ) from None
    others = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if others:
        log.warning("forking while other threads run (%s)", ", ".join(others))
    parent = os.getpid()
    children: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
    stopping = False

    def forward(sig: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for proc, _ in children:
            if proc.pid is not None and proc.exitcode is None:
                with contextlib.suppress(ProcessLookupError):  # it has just exited
                    os.kill(proc.pid, sig)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        try:
            for index in range(count):
                receive, send = context.Pipe(duplex=False)
                proc = context.Process(
                    target=_child,
                    args=(work, index, parent, send),
                    name=f"instar-worker-{index}",
                )
                # Each signal is held while a child is forked: the parent passes
                # it on once the child is in the list; the child, which starts
                # with the signals still held, lets them through once it has
                # its own handlers (an early one ends it, as it would a worker).
                signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
                try:
                    proc.start()
                    children.append((proc, receive))
                finally:
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
                send.close()
        except BaseException:
            # fork() refused (too many processes, no memory): stop those started.
            forward(signal.SIGTERM, None)
            for started, _ in children:
                started.join()
            raise
        log.info(
            "%d worker processes forked (pids %s)",
            count,
            ", ".join(str(proc.pid) for proc, _ in children),
        )
        ends: dict[int, ProcessEnd] = {}
        while len(ends) < count:
            ended = wait([proc.sentinel for i, (proc, _) in enumerate(children) if i not in ends])
            for i, (child, receive) in enumerate(children):
                if i in ends or child.sentinel not in ended:
                    continue
                child.join()
                code = 1 if child.exitcode is None else child.exitcode
                ends[i] = ProcessEnd(code, _report(receive))
                if not burst and not stopping and len(ends) < count:
                    log.error(
                        "worker process %d (pid %s) ended on its own (%s); stopping the others",
                        i,
                        child.pid,
                        _how(code),
                    )
                    forward(signal.SIGTERM, None)
        return [ends[i] for i in range(count)]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for _, receive in children:
            receive.close()


def _child(
    work: Callable[[int], dict[str, Any]], index: int, parent: int, send: Connection
) -> None:
    """A child's whole life: its own process group and signal handling, then
    the work, then its report."""
    os.setpgid(0, 0)
    for sig in FORWARDED:  # the worker sets its own once it runs
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    threading.Thread(
        target=_stop_when_orphaned, args=(parent,), name="instar-orphan-check", daemon=True
    ).start()
    report = work(index)
    send.send_bytes(json.dumps(report).encode())  # JSON, never pickle
    send.close()
    sys.stdout.flush()
    sys.stderr.flush()
    # Not through threading's shutdown: a ``def`` handler past its job (released
    # at the stop) may still run in a thread, and its result would be refused.
    os._exit(0)


def _stop_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(ORPHAN_CHECK_SECONDS)
    log.warning("the parent process (pid %d) is gone; stopping", parent)
    os.kill(os.getpid(), signal.SIGTERM)


def _report(receive: Connection) -> dict[str, Any] | None:
    try:
        if not receive.poll():
            return None
        report = json.loads(receive.recv_bytes())
    except (EOFError, OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None


def _how(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"
