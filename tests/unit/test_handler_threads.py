"""The threads that run ``def`` handlers: as many as are needed, never more than
their size; one call that raises does not end its thread; at shutdown, calls
not started yet never start."""

from __future__ import annotations

import threading
import time

from instar.worker.executor import HandlerThreads


def test_calls_run_side_by_side_in_as_many_threads_as_are_in_flight_up_to_the_size() -> None:
    release = threading.Event()
    lock = threading.Lock()
    names: set[str] = set()
    running = 0
    peak = 0

    def call(item: int) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            names.add(threading.current_thread().name)
        release.wait(10)
        with lock:
            running -= 1

    threads = HandlerThreads(3, call, "test-job")
    for n in range(5):
        threads.submit(n, in_flight=n + 1)
    deadline = time.monotonic() + 10
    while peak < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert peak == 3  # three at once: the size, though five were handed over
    release.set()
    threads.shutdown()
    assert names == {"test-job_0", "test-job_1", "test-job_2"}


def test_a_call_that_raises_leaves_its_thread_serving_the_next() -> None:
    done = threading.Event()

    def call(item: str) -> None:
        if item == "bad":
            raise RuntimeError("a bug in the worker")
        done.set()

    threads = HandlerThreads(1, call, "test-job")
    threads.submit("bad", in_flight=1)
    threads.submit("good", in_flight=1)
    assert done.wait(10)
    threads.shutdown()


def test_calls_not_started_at_shutdown_never_start() -> None:
    started: list[int] = []
    release = threading.Event()

    def call(item: int) -> None:
        started.append(item)
        release.wait(10)

    threads = HandlerThreads(1, call, "test-job")
    for n in range(3):
        threads.submit(n, in_flight=n + 1)
    deadline = time.monotonic() + 10
    while not started and time.monotonic() < deadline:
        time.sleep(0.01)
    threads.shutdown()
    release.set()
    time.sleep(0.1)
    assert started == [0]
