"""A worker rides out a restart of its PostgreSQL server: it retries, reconnects
and finishes every job, none lost and none run twice.

The test runs a throwaway cluster of its own (initdb into a temporary directory,
on a free port), so that restarting it disturbs nobody else. It is skipped only
when the PostgreSQL server binaries cannot be found.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

import instar
from instar.lifecycle import State
from instar.store.contract import Applied, Move
from instar.store.postgres.store import PostgresStore
from instar.store.sql_store import SQLStore, SQLTransaction
from tests.conftest import running_worker
from tests.jobs_app import app as jobs_app
from tests.worker.test_postgres_processes import runs_of, started, wait_until, worker_process

JOBS = 300
# While the server is down the worker keeps saying it is retrying: its listening
# thread reconnects with backoff (0.1 s, 0.2 s, 0.4 s, ...). The worker loop
# itself warns only if its own batch meets the dead connection first; otherwise
# it waits quietly in the pool for a connection, so that is not asserted here.
RETRYING = re.compile(r"listening for new jobs failed\b.*?retrying in [0-9.]+s", re.DOTALL)


def _server_bindir() -> Path | None:
    """Where initdb and pg_ctl live: $INSTAR_PG_BIN, pg_config, the Debian layout, or PATH."""
    candidates: list[Path] = []
    if os.environ.get("INSTAR_PG_BIN"):
        candidates.append(Path(os.environ["INSTAR_PG_BIN"]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if found.returncode == 0:
            candidates.append(Path(found.stdout.strip()))
    candidates += [
        Path(p)
        for p in sorted(
            glob.glob("/usr/lib/postgresql/*/bin"),
            key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0,
            reverse=True,
        )
    ]
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Cluster:
    """A private PostgreSQL cluster. initdb and pg_ctl refuse to run as root, so
    as root they run as the ``postgres`` OS user, in a directory it owns."""

    bindir: Path
    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def server_log(self) -> Path:
        return self.root / "server.log"

    def url(self, schema: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres?schema={schema}"

    def run(self, tool: str, *args: str, timeout: float = 60) -> None:
        command = [str(self.bindir / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(
            command, cwd=self.root, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            log = self.server_log.read_text() if self.server_log.exists() else ""
            raise AssertionError(
                f"{tool} {' '.join(args)} failed ({done.returncode}):\n"
                f"{done.stdout}\n{done.stderr}\nserver log:\n{log}"
            )

    def initdb(self) -> None:
        self.run(
            "initdb",
            "-D", str(self.data),
            "-U", "postgres",
            "-A", "trust",
            "-E", "UTF8",
            "--locale=C",
            "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self.run(
            "pg_ctl", "start", "-D", str(self.data), "-l", str(self.server_log),
            "-w", "-t", "30", "-o", options,
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "30")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    bindir = _server_bindir()
    if bindir is None:
        missing = "PostgreSQL server binaries (initdb, pg_ctl) not found"
        if os.environ.get("INSTAR_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{missing} (INSTAR_REQUIRE_POSTGRES=1)")
        pytest.skip(missing)
    root = Path(tempfile.mkdtemp(prefix="instar-pg-"))
    if os.geteuid() == 0:
        # root's pytest tmp_path is not reachable for the postgres user.
        postgres = pwd.getpwnam("postgres")
        os.chown(root, postgres.pw_uid, postgres.pw_gid)
    server = Cluster(bindir, root, _free_port())
    try:
        server.initdb()
        server.start()
        yield server
    finally:
        try:
            if server.running():
                server.stop("immediate")
        finally:
            shutil.rmtree(root, ignore_errors=True)


def _completed(client: instar.App) -> int:
    """Completed jobs, or -1 while the server (or this client's pooled connection) is down."""
    try:
        return client.counts().get(State.COMPLETED, 0)
    except instar.DatabaseUnavailable:
        return -1


def _unfinished(client: instar.App, stderr: Path) -> str:
    """What a timeout should show: the jobs not completed, their timelines, the worker's log."""
    stuck = [job for job in client.jobs(limit=JOBS) if job.state is not State.COMPLETED]
    lines = [f"counts {client.counts()}"]
    for job in stuck[:5]:
        lines.append(f"job {job.id} {job.state.value} worker={job.worker}")
        lines += [
            f"    {e.from_state} -> {e.to_state} {e.trigger} worker={e.worker}"
            for e in client.history(job.id)
        ]
    return "\n".join([*lines, "worker log:", stderr.read_text()])


@pytest.mark.slow
def test_a_worker_retries_through_a_server_restart_and_finishes_every_job_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    url = cluster.url("instar_restart")
    log, stderr = tmp_path / "runs.log", tmp_path / "worker.err"
    with instar.App(url) as client:
        client.registry.update(jobs_app.registry)
        with worker_process(url, log, stderr, "--queue", "slow", "--concurrency", "4") as proc:
            wait_until(lambda: started(proc, stderr), what="the worker started")
            jobs = client.enqueue_many(
                "record_slowly", [{"n": n, "seconds": 0.01} for n in range(JOBS)]
            )
            wait_until(lambda: len(runs_of(log)) >= 60, what="60 jobs ran")

            done_before = _completed(client)
            logged_before = stderr.stat().st_size
            cluster.stop("fast")
            stopped_at = time.monotonic()
            # Down for a while: the worker finishes what it holds, fails to report
            # it, and keeps trying.
            time.sleep(1.5)
            logged_while_down = stderr.read_bytes()[logged_before:].decode()
            cluster.start()
            down_for = time.monotonic() - stopped_at

            wait_until(
                lambda: _completed(client) == JOBS,
                what="all jobs completed after restart",
                state=lambda: _unfinished(client, stderr),
            )
            assert proc.poll() is None, "the worker should have survived the restart"
        assert proc.returncode == 0
        worker_log = stderr.read_text()

        assert 0 <= done_before < JOBS, f"the restart came too late ({done_before} done)"
        retries = RETRYING.findall(logged_while_down)
        assert len(retries) >= 2, (
            f"the worker should keep retrying during the {down_for:.1f}s outage:\n"
            f"{logged_while_down}"
        )
        assert "worker done: " in worker_log, worker_log

        # Nothing lost, nothing run twice: one run per job in the log, and one
        # completion in each job's timeline, after one claim, or after claims that
        # were handed back before they started (claimed ahead during the outage,
        # released when they could not start in time): never orphaned, never failed.
        assert client.counts() == {State.COMPLETED: JOBS}
        per_job = Counter(n for n, _ in runs_of(log))
        assert per_job == Counter(range(JOBS)), (
            f"ran twice: {sorted(n for n, c in per_job.items() if c > 1)}; "
            f"never ran: {sorted(set(range(JOBS)) - set(per_job))}"
        )
        for job in jobs:
            events = [e for e in client.history(job.id) if e.from_state != e.to_state]
            kept = [(e.from_state, e.to_state) for e in events if e.trigger != "released"]
            released = sum(e.trigger == "released" for e in events)
            assert kept == [
                (None, State.READY),
                *[(State.READY, State.RUNNING)] * (released + 1),
                (State.RUNNING, State.COMPLETED),
            ], f"job {job.id}: {[(e.from_state, e.to_state, e.trigger) for e in events]}"


def _dies_once(monkeypatch: pytest.MonkeyPatch, *, after_writing: bool) -> list[int]:
    """The first transaction that writes moves meets a dead connection, before
    or after writing them; the list returned says how many moves it had."""
    real_apply = SQLTransaction.apply_moves
    failures: list[int] = []

    def die_once(tx: SQLTransaction, moves: Sequence[Move]) -> Applied:
        applied = real_apply(tx, moves) if after_writing else None
        if not failures:
            failures.append(len(moves))
            raise psycopg.OperationalError("terminating connection due to administrator command")
        return applied if applied is not None else real_apply(tx, moves)

    monkeypatch.setattr(SQLTransaction, "apply_moves", die_once)
    return failures


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_batch_whose_connection_dies_mid_transaction_is_retried_whole(
    app: instar.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the restart above sometimes hits, made deterministic: the worker's
    batch (completions and what they set off: one transaction) meets the dead
    connection after its moves were written. Nothing of it commits;
    the worker keeps its reports and tries again, so every job completes once
    and no claim is left in ``running`` until its lease runs out (which a busy
    worker's heartbeat keeps postponing)."""

    @app.job(name="tick")
    def tick(n: int) -> int:
        time.sleep(0.005)
        return n

    failures = _dies_once(monkeypatch, after_writing=True)
    # Reports go through a transaction: none is written alone (one statement, which
    # commits whole or not at all), as they are when the jobs have dependants.
    monkeypatch.setattr(PostgresStore, "apply_alone", SQLStore.apply_alone)
    jobs = app.enqueue_many("tick", [{"n": n} for n in range(200)])
    with running_worker(app, concurrency=2) as worker:
        # Well inside the 30 s lease: a claim the worker dropped cannot be rescued in time.
        wait_until(
            lambda: app.counts().get(State.COMPLETED, 0) == len(jobs),
            timeout=15,
            what="all jobs completed",
            state=lambda: (
                app.counts(),
                [(j.id, j.worker) for j in app.jobs(state=State.RUNNING)],
                worker.report,
            ),
        )
    assert failures, "a batch with moves should have failed once"
    assert (worker.report.completed, worker.report.refused) == (len(jobs), 0)
    for job in jobs:
        moves = [e.to_state for e in app.history(job.id) if e.from_state != e.to_state]
        assert moves == [State.READY, State.RUNNING, State.COMPLETED], f"job {job.id}: {moves}"


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_reports_written_before_a_batch_failed_are_not_sent_again(
    app: instar.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of reports, some written alone (jobs nothing waits on) and some
    through a transaction (jobs with a dependant), whose transaction meets the
    dead connection once: the worker sends again only what was not written, so
    no report is refused and every job completes once, its dependant after it."""

    @app.job(name="tick")
    def tick(n: int) -> int:
        time.sleep(0.002)
        return n

    failures = _dies_once(monkeypatch, after_writing=False)
    parents = app.enqueue_many("tick", [{"n": n} for n in range(100)])
    dependants = [app.enqueue("tick", {"n": -p.id}, after=[p.id]) for p in parents[::2]]
    jobs = [*parents, *dependants]
    with running_worker(app, concurrency=4) as worker:
        wait_until(
            lambda: app.counts().get(State.COMPLETED, 0) == len(jobs),
            timeout=15,
            what="all jobs completed",
            state=lambda: (app.counts(), worker.report),
        )
    assert failures, "a transaction of reports should have failed once"
    assert (worker.report.completed, worker.report.refused) == (len(jobs), 0)
    for job in jobs:
        events = app.history(job.id)
        assert "refused" not in [e.trigger for e in events], f"job {job.id}"
        moves = [e.to_state for e in events if e.from_state != e.to_state]
        assert moves[-2:] == [State.RUNNING, State.COMPLETED], f"job {job.id}: {moves}"
        assert moves.count(State.COMPLETED) == 1, f"job {job.id}: {moves}"
