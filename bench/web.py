"""The HTTP API under load: one ``instar serve`` process on SQLite, driven by
one load tool (wrk, a fixed number of connections kept busy) that
also drives a bare endpoint of the same framework, so that the ratio says what
Instar adds to the framework, not how fast the tool is."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.harness import (
    ROOT,
    Row,
    Sizes,
    attempt,
    bulk_enqueue,
    enqueue_one_by_one,
    judged,
    progress,
    rate,
)
from bench.noop_app import make_app
from instar import App

IN_FLIGHT = 16
"""Connections the load tool (wrk, one thread) keeps busy."""
IDLE_STREAMS = 200
LIVE_JOBS = 1000
"""Jobs enqueued at once, and moving together, while one stream follows."""

CAPTION = (
    f"One instar serve process (uvicorn, defaults) and one load tool (wrk, one thread, "
    f"{IN_FLIGHT} keep-alive connections) on the same 2 cores; the bare endpoint is "
    "the same framework and server returning a constant. Database: SQLite in /tmp."
)


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@contextmanager
def _serving(command: list[str], port: int, health: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": os.environ.get("INSTAR_BENCH_CODE", str(ROOT))}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}{health}", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command[2:4]} did not start")
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


def _load(url: str, seconds: float, headers: dict[str, str], body: str | None = None) -> float:
    """Requests per second wrk sustains for ``seconds`` against ``url``, with
    ``IN_FLIGHT`` connections (a POST of the JSON ``body`` when given)."""
    command = ["wrk", "-t1", f"-c{IN_FLIGHT}", f"-d{seconds:.0f}s", "--latency"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        if body is not None:
            script.write(
                f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\n'
                'wrk.headers["Content-Type"] = "application/json"\n'
            )
            script.flush()
            command += ["-s", script.name]
        found = subprocess.run([*command, url], capture_output=True, text=True, check=True)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", found.stdout)
    if errors:
        raise RuntimeError(f"{errors.group(1)} requests failed: {found.stdout[-300:]}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", found.stdout)
    if match is None:
        raise RuntimeError(f"no rate in wrk's output: {found.stdout[-300:]}")
    return float(match.group(1))


def _stream_rate(api: str, headers: dict[str, str], after: int, expected: int) -> float:
    """Events/s one stream delivers while it catches up on ``expected`` events."""
    got = 0
    start = 0.0
    with (
        httpx.Client(headers=headers, timeout=60) as client,
        client.stream("GET", f"{api}/events/stream", params={"after": after}) as stream,
    ):
        for line in stream.iter_lines():
            if line.startswith("id: "):
                if got == 0:
                    start = time.perf_counter()
                got += 1
                if got == expected:
                    break
    return (expected - 1) / (time.perf_counter() - start)


def _stream_live(api: str, headers: dict[str, str], url: str, rounds: int) -> tuple[float, float]:
    """Events/s one stream delivers while jobs move: ``rounds`` times 1,000 jobs
    enqueued at once, the next batch as soon as fewer than 1,000 are left, run
    by a worker process; three events each. Returns (events/s from the first
    event delivered to the last, seconds from the last event written to its
    delivery: near 0 when the stream keeps up with what the worker writes)."""
    expected = rounds * LIVE_JOBS * 3
    times: list[float] = []
    opened = threading.Event()

    def follow() -> None:
        with (
            httpx.Client(headers=headers, timeout=120) as client,
            client.stream("GET", f"{api}/events/stream") as stream,
        ):
            for line in stream.iter_lines():
                if line.startswith(": stream open"):
                    opened.set()
                elif line.startswith("id: "):
                    times.append(time.perf_counter())
                    if len(times) == expected:
                        return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    if not opened.wait(30):
        raise RuntimeError("the stream did not open")
    env = {**os.environ, "PYTHONPATH": os.environ.get("INSTAR_BENCH_CODE", str(ROOT))}
    worker = subprocess.Popen(
        [sys.executable, "-m", "instar.cli.main", "worker", "--database", url, "--app",
         "bench.noop_app:app", "--quiet"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        with make_app(url) as app:
            deadline = time.monotonic() + 120
            for _ in range(rounds):
                app.enqueue_many("noop_sync", [{}] * LIVE_JOBS)
                # The next 1,000 as soon as fewer than 1,000 are live (counted
                # through the live states' indexes): 1,000 to 2,000 always moving.
                while _live(app) >= LIVE_JOBS and time.monotonic() < deadline:
                    time.sleep(0.005)
            while _live(app) and time.monotonic() < deadline:
                time.sleep(0.005)
            written = time.perf_counter()
        reader.join(120)
    finally:
        worker.terminate()
        worker.wait(30)
    if len(times) < expected:
        raise RuntimeError(f"the stream delivered {len(times):,} of {expected:,} events")
    return (expected - 1) / (times[-1] - times[0]), max(0.0, times[-1] - written)


def _live(app: App) -> int:
    return sum(count for _, _, count in app.reader.live_counts())


def _idle_streams(api: str, headers: dict[str, str], pid: int) -> tuple[int, int]:
    """RSS of the server before and with ``IDLE_STREAMS`` idle streams open."""
    before = _rss(pid)
    during: list[int] = []

    async def hold() -> None:
        limits = httpx.Limits(max_connections=IDLE_STREAMS + 10)
        async with httpx.AsyncClient(headers=headers, limits=limits, timeout=60) as client:
            streams = [client.stream("GET", f"{api}/events/stream") for _ in range(IDLE_STREAMS)]
            responses = await asyncio.gather(*(s.__aenter__() for s in streams))
            if any(r.status_code != 200 for r in responses):
                raise RuntimeError("a stream was refused")
            await asyncio.sleep(2)
            during.append(_rss(pid))
            for s in streams:
                await s.__aexit__(None, None, None)

    asyncio.run(hold())
    return before, during[0]


ROUNDS = 3
"""Each request-rate figure is the median of this many runs, every figure's
runs taking turns with the others' so that all see the machine alike."""


def _taking_turns(
    rows: list[Row], turns: dict[str, Callable[[], float]], rounds: int
) -> dict[str, list[float]]:
    """Each measurement ``rounds`` times, in turns: the runs of each (none when
    one failed: ``attempt`` records why)."""
    runs: dict[str, list[float]] = {name: [] for name in turns}
    failed: set[str] = set()
    for _ in range(rounds):
        for name, measure in turns.items():
            if name in failed:
                continue
            value = attempt(rows, name, measure)
            if value is None:
                failed.add(name)
                runs[name] = []
            else:
                runs[name].append(value)
    return runs


def _median(runs: list[float]) -> float | None:
    return statistics.median(runs) if runs else None


def _runs(runs: list[float]) -> str:
    return f"median of {len(runs)} runs ({', '.join(f'{v:,.0f}' for v in runs)})"


def run(rows: list[Row], sizes: Sizes, tmp: Path) -> None:
    """Every HTTP figure, on a fresh SQLite database."""
    url = f"sqlite:///{tmp / 'http.db'}"
    seconds = 3.0 if sizes.quick else 6.0
    with make_app(url) as app:
        app.migrate()
        from instar.web import tokens

        token = tokens.create(app.engine.store, "bench", ["admin"], None, app.clock.now())
        job = app.enqueue("noop_sync")
    headers = {"Authorization": f"Bearer {token}"}

    progress.print("HTTP: a bare endpoint and instar serve, taking turns ...")
    bare_port = _port()
    bare_command = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.web_bare:app",
        "--port",
        str(bare_port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    port = _port()
    api = f"http://127.0.0.1:{port}/api/v1"
    serve_command = [
        sys.executable,
        "-m",
        "instar.cli.main",
        "serve",
        "--database",
        url,
        "--app",
        "bench.noop_app:app",
        "--port",
        str(port),
        "--max-streams",
        str(IDLE_STREAMS + 10),
    ]
    bare_url = f"http://127.0.0.1:{bare_port}"
    post_body = json.dumps({"name": "noop_sync"})
    engine_db = tmp / "engine.db"
    turns: dict[str, Callable[[], float]] = {
        "bare": lambda: _load(f"{bare_url}/constant", seconds, {}),
        "bare def": lambda: _load(f"{bare_url}/constant-def", seconds, {}),
        "GET": lambda: _load(f"{api}/jobs/{job.id}", seconds, headers),
        "POST": lambda: _load(f"{api}/jobs", seconds, headers, post_body),
        "engine": lambda: enqueue_one_by_one(f"sqlite:///{engine_db}", sizes.enqueue_jobs),
    }
    with (
        _serving(bare_command, bare_port, "/constant"),
        _serving(serve_command, port, "/api/v1/health") as server,
    ):
        found = _taking_turns(rows, turns, ROUNDS)
        bare = _median(found["bare"])
        for label, key in (("async def", "bare"), ("def, on a thread", "bare def")):
            value = _median(found[key])
            if value is not None:
                rows.append(
                    Row(
                        f"bare endpoint (FastAPI, a constant, {label})",
                        f"{value:,.0f} req/s",
                        "-",
                        "-",
                        None,
                        f"{_runs(found[key])}; {seconds:.0f} s of wrk each, "
                        f"{IN_FLIGHT} connections, one uvicorn process",
                    )
                )
        get, post = _median(found["GET"]), _median(found["POST"])
        engine = _median(found["engine"])
        if get is not None:
            rows.append(
                judged(
                    "GET /jobs/{id}",
                    f"{get:,.0f} req/s",
                    get,
                    bare,
                    "bare",
                    ">= 0.50x bare",
                    0.5,
                    f"{_runs(found['GET'])}; same load tool and settings, taking turns "
                    "with the bare endpoint",
                )
            )
        if post is not None:
            rows.append(
                judged(
                    "POST /jobs",
                    f"{post:,.0f} req/s",
                    post,
                    engine,
                    "engine",
                    ">= 0.50x engine",
                    0.5,
                    f"{_runs(found['POST'])}; the engine's own one-by-one enqueue, "
                    f"taking turns: {rate(engine) if engine else '-'}",
                )
            )
        with make_app(url) as app:
            after = app.last_event_id()
        events = 3 * (5_000 if sizes.quick else 20_000)
        bulk_enqueue(url, events // 3, 10_000)
        with make_app(url) as app:
            app.run_worker(burst=True)
        streamed = attempt(rows, "event stream", lambda: _stream_rate(api, headers, after, events))
        if streamed is not None:
            rows.append(
                Row(
                    "one event stream, catching up",
                    f"{streamed:,.0f} events/s",
                    f"{streamed / 10_000:.2f}x 10,000/s",
                    ">= 10,000 events/s",
                    streamed >= 10_000,
                    f"{events:,} events of {events // 3:,} jobs (enqueued, claimed, "
                    "completed) read from the start of the stream",
                )
            )
        rounds = 3 if sizes.quick else 10
        live = attempt(rows, "live stream", lambda: _stream_live(api, headers, url, rounds))
        if live is not None:
            rows.append(
                Row(
                    f"one event stream, {LIVE_JOBS:,} jobs moving",
                    f"{live[0]:,.0f} events/s",
                    f"{live[0] / 10_000:.2f}x 10,000/s",
                    ">= 10,000 events/s",
                    live[0] >= 10_000,
                    f"{rounds} x {LIVE_JOBS:,} jobs enqueued at once (the next when fewer "
                    f"than {LIVE_JOBS:,} are left), run by a worker process while the stream "
                    f"follows; last event delivered "
                    f"{live[1] * 1000:.0f} ms after the last job completed",
                )
            )
        idle = attempt(rows, "idle streams", lambda: _idle_streams(api, headers, server.pid))
        if idle is not None:
            growth = (idle[1] - idle[0]) / 2**20
            rows.append(
                Row(
                    f"{IDLE_STREAMS} idle event streams",
                    f"+{growth:.1f} MiB",
                    "-",
                    "< +50 MiB",
                    growth < 50,
                    f"server RSS {idle[0] / 2**20:.1f} -> {idle[1] / 2**20:.1f} MiB",
                )
            )
