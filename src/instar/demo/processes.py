"""The demo's worker processes: starting ``instar worker`` subprocesses, finding
one by the worker id it writes into the timeline, and stopping them all.

Whatever happens to the demo (an error, Ctrl-C, a SIGTERM), no worker it
started outlives it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

WORKER_APP = "instar.demo.handlers:app"
"""The App that holds the demo's handlers, as ``instar worker --app`` names it."""


@dataclass
class WorkerProcess:
    """One ``instar worker`` subprocess, with a short label for the printout."""

    label: str
    queues: tuple[str, ...]
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    killed: bool = False

    @property
    def pid(self) -> int:
        """Worker ids carry the pid, so events can be matched to A, B and C."""
        return self.proc.pid


def worker_of(workers: Sequence[WorkerProcess], worker_id: str | None) -> WorkerProcess | None:
    """The worker whose pid the worker id (``host:pid:suffix``) carries, if one of ``workers``."""
    parts = (worker_id or "").rsplit(":", 2)
    for worker in workers:
        if len(parts) == 3 and parts[1] == str(worker.pid):
            return worker
    return None


def worker_command() -> list[str]:
    """The CLI of the same interpreter, so that the demo runs without PATH set up."""
    return [sys.executable, "-m", "instar.cli.main", "worker", "--app", WORKER_APP]


def start_worker(
    label: str, queues: tuple[str, ...], database: str, folder: Path, concurrency: int
) -> WorkerProcess:
    """Start a worker whose log goes to a file, so it never scribbles over the live view."""
    log = (folder / f"worker-{label}.log").open("ab")
    command = [*worker_command(), "--database", database, "--concurrency", str(concurrency)]
    for queue in queues:
        command += ["--queue", queue]
    command += ["--shutdown-grace", "2"]
    env = {**os.environ, "INSTAR_DATABASE": database}
    try:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
        )
    except BaseException:
        log.close()
        raise
    return WorkerProcess(label, queues, proc, log)


def stop_workers(workers: list[WorkerProcess], timeout: float = 10.0) -> None:
    """SIGTERM every live worker, then wait; kill any that outstays ``timeout``."""
    for worker in workers:
        if worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for worker in workers:
        try:
            worker.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.proc.kill()
            worker.proc.wait()
        worker.log.close()


@contextmanager
def worker_pool() -> Iterator[list[WorkerProcess]]:
    """Whatever happens in the block, no worker outlives it."""
    workers: list[WorkerProcess] = []
    try:
        yield workers
    finally:
        stop_workers(workers)


@contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """A SIGTERM to the demo must stop its workers too, as Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
