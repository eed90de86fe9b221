"""Durable machines (``app.machines``) on SQLite and on PostgreSQL, each figure
beside what it is judged by, measured in the same run.

- ``send`` to one instance of a machine that cycles ``a --go--> b --go--> a``
  (each move adds 1 to a number in its context), against the raw limit of the
  backend (one committed single-row INSERT at a time), the two taken in turns.
  Target: at least half the raw limit.
- PostgreSQL only: sends across 1,000 instances from 8 processes, each process
  sending to its own eighth of them, all at once: the total rate against the
  one-instance rate. Target: at least twice it.
- Timer accuracy with 100,000 timers armed (instances waiting 30 days): a
  worker (``instar worker``, defaults) fires a few hundred more that come due
  a few seconds ahead, one after another; each one's lateness is read from
  its history entry (``late_ms``). Target: every one within 1 s.

The 100,000 waiting instances are written with plain SQL, the rows
``create`` writes (instance, history entry, timer); a sample created through
the API gives the time the API would take for all of them, and one of the
SQL-written instances is verified by ``m.verify``, as a check that the rows
are the API's.
"""

from __future__ import annotations

import json
import os
import selectors
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.harness import (
    ROOT,
    BenchError,
    Query,
    Row,
    Sizes,
    attempt,
    bench_env,
    code_note,
    instar_worker_command,
    judged,
    load_note,
    log_tail,
    percentile,
    progress,
    rate,
    started,
    stop_process,
    wait_for,
)
from bench.noop_app import make_app
from bench.system import CpuSplit, machine_cpu_seconds, postgres_cpu_seconds
from instar import App
from instar.machines import Machine

if TYPE_CHECKING:
    from bench.postgres import PostgresBench

CAPTION = (
    "Each send is one call of app.machines.send from one thread, default settings; the raw "
    "limit and the sends taken in turns, the same number of rounds of each."
)

DUE_DELAY = "3s"
"""How long after its creation each timer in the accuracy run comes due."""
FAR_DELAY_DAYS = 30
"""How far ahead the armed timers are (the definition's ``after``: ``30d``)."""


@dataclass(frozen=True)
class MachineSizes:
    """How much work each machines measurement does."""

    rounds: int  # one-instance rounds, each beside a raw-limit round
    send_seconds: float  # each round sends for this long
    send_max: int  # ... or this many sends, whichever comes first
    instances: int  # the several-processes figure
    processes: int
    parallel_seconds: float
    armed: int  # timers waiting 30 days
    api_sample: int  # of those, created through the API (the rest with SQL)
    due: int  # timers that come due during the run
    due_gap: float  # seconds between two of their creations


FULL_MACHINES = MachineSizes(
    rounds=5,
    send_seconds=1.5,
    send_max=5_000,
    instances=1_000,
    processes=8,
    parallel_seconds=6.0,
    armed=100_000,
    api_sample=1_000,
    due=200,
    due_gap=0.010,
)
QUICK_MACHINES = MachineSizes(
    rounds=2,
    send_seconds=0.5,
    send_max=1_000,
    instances=200,
    processes=8,
    parallel_seconds=2.0,
    armed=10_000,
    api_sample=200,
    due=50,
    due_gap=0.010,
)


def sizes_for(sizes: Sizes) -> MachineSizes:
    return QUICK_MACHINES if sizes.quick else FULL_MACHINES


# -- the machines --------------------------------------------------------------------


def definitions() -> list[Machine]:
    """The three machines measured, as builder ``Machine`` objects: ``toggle``
    (``a --go--> b --go--> a``, adding 1 to ``n``), ``sleeper`` (waits 30 days)
    and ``alarm`` (rings ``DUE_DELAY`` after its creation)."""
    toggle = Machine("toggle", 1, initial="a", context={"n": 0})
    toggle.state("a").state("b")
    toggle.transition("a", "go", "b", add={"n": 1}).transition("b", "go", "a", add={"n": 1})
    sleeper = Machine("sleeper", 1, initial="waiting")
    sleeper.state("waiting", after=[(f"{FAR_DELAY_DAYS}d", "expire")])
    sleeper.state("expired", final=True).transition("waiting", "expire", "expired")
    alarm = Machine("alarm", 1, initial="armed")
    alarm.state("armed", after=[(DUE_DELAY, "ring")]).state("rang", final=True)
    alarm.transition("armed", "ring", "rang")
    return [toggle, sleeper, alarm]


def prepared(url: str) -> App:
    """An App on ``url`` (migrated) with the three machines registered; the
    caller closes it."""
    app = make_app(url)
    app.migrate()
    for machine in definitions():
        app.machines.register(machine)
    return app


# -- send on one instance ------------------------------------------------------------


@dataclass(frozen=True)
class Rounds:
    """Sends/s to one instance and the raw limit, one of each per round, in
    turns; and, in the same rounds, sends to one instance from two Apps in
    turn (as from two processes)."""

    sends: list[float]
    raw: list[float]
    counts: list[int]
    shared: list[float]

    @property
    def send_rate(self) -> float:
        return statistics.median(self.sends)

    @property
    def raw_rate(self) -> float:
        return statistics.median(self.raw)

    @property
    def shared_rate(self) -> float:
        return statistics.median(self.shared)


def sends_to_one(apps: Sequence[App], key: str, seconds: float, most: int) -> tuple[float, int]:
    """``m.send(toggle, key, "go")`` in a loop for ``seconds`` (or ``most``
    sends), from each of ``apps`` in turn: sends/s and how many."""
    machines = [app.machines for app in apps]
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while n < most and time.perf_counter() < deadline:
        result = machines[n % len(machines)].send("toggle", key, "go")
        if not result.accepted:
            raise BenchError(f"a send was refused: {result.reason} {result.detail}")
        n += 1
    return n / (time.perf_counter() - start), n


def one_instance(url: str, sizes: MachineSizes, raw: Callable[[int], float]) -> Rounds:
    """Rounds of sends to one instance, each after a round of ``raw(r)`` (the
    raw limit, rows/s, on a fresh table) and before a round of sends to
    another instance from two Apps in turn."""
    sends, raws, counts, shared = [], [], [], []
    with prepared(url) as app, prepared(url) as other:
        app.machines.create("toggle", "one")
        app.machines.create("toggle", "two")
        sends_to_one([app], "one", 0.2, 50)  # connection, statements, caches
        sends_to_one([app, other], "two", 0.2, 50)
        before = app.machines.get("toggle", "one").seq
        for r in range(sizes.rounds):
            raws.append(raw(r))
            found, n = sends_to_one([app], "one", sizes.send_seconds, sizes.send_max)
            sends.append(found)
            counts.append(n)
            shared.append(sends_to_one([app, other], "two", sizes.send_seconds, sizes.send_max)[0])
        final = app.machines.get("toggle", "one")
    if final.seq != before + sum(counts):
        raise BenchError(f"{sum(counts)} sends took the instance from seq {before} to {final.seq}")
    return Rounds(sends, raws, counts, shared)


def one_instance_rows(found: Rounds, label: str, raw_what: str) -> list[Row]:
    per_send = 1000 / found.send_rate
    per_commit = 1000 / found.raw_rate
    return [
        Row(
            f"raw limit: {raw_what}",
            rate(found.raw_rate),
            "1.00x raw",
            "-",
            None,
            f"median of {len(found.raw)} rounds ({', '.join(f'{v:,.0f}' for v in found.raw)} "
            f"/s), in turns with the sends below; {per_commit:.2f} ms per commit",
        ),
        judged(
            f"send, one instance, {label}",
            f"{found.send_rate:,.0f} sends/s",
            found.send_rate,
            found.raw_rate,
            "raw",
            ">= 0.50x raw",
            0.5,
            f"median of {len(found.sends)} rounds "
            f"({', '.join(f'{v:,.0f}' for v in found.sends)} /s; {sum(found.counts):,} sends); "
            f"{per_send:.2f} ms per send; a --go--> b --go--> a, add n=1 each; every send "
            "accepted and counted in the instance's seq",
        ),
        judged(
            f"send, one instance, from two Apps in turn, {label}",
            f"{found.shared_rate:,.0f} sends/s",
            found.shared_rate,
            found.raw_rate,
            "raw",
            "-",
            None,
            f"median of {len(found.shared)} rounds "
            f"({', '.join(f'{v:,.0f}' for v in found.shared)} /s), in the same rounds; "
            f"{1000 / found.shared_rate:.2f} ms per send: each App finds the instance moved "
            "by the other since it last wrote it (as two processes sending to one instance do)",
        ),
    ]


# -- sends from several processes (PostgreSQL) ---------------------------------------


def sender_main(argv: Sequence[str]) -> int:
    """A sending process: ``URL FIRST STEP INSTANCES``. Sends ``go`` to keys
    ``t-FIRST``, ``t-(FIRST+STEP)`` ... round and round; prints ``ready`` once
    its App is open, starts on a line ``go SECONDS`` on stdin, and prints
    ``{"sends": n, "seconds": s}`` when the time is up."""
    url, first, step, instances = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    keys = [f"t-{i}" for i in range(first, instances, step) if instances >= step]
    keys = keys or [f"t-{i}" for i in range(instances)]  # fewer than processes: share them
    with make_app(url) as app:
        m = app.machines
        for key in keys:  # untimed: the first send of a row this process never wrote is locked
            m.send("toggle", key, "go")
        print("ready", flush=True)
        line = sys.stdin.readline().split()
        if not line or line[0] != "go":
            return 2
        seconds = float(line[1])
        n, i = 0, 0
        cpu = time.process_time()
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            if not m.send("toggle", keys[i], "go").accepted:
                print(json.dumps({"error": f"refused at {keys[i]}"}), flush=True)
                return 1
            n += 1
            i = (i + 1) % len(keys)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
    report = {"sends": n + len(keys), "timed": n, "seconds": elapsed, "cpu": cpu}
    print(json.dumps(report), flush=True)
    return 0


@dataclass(frozen=True)
class Parallel:
    processes: int
    instances: int
    rates: list[float]  # each process's sends/s
    timed: int
    seconds: float
    create_seconds: float
    cpu: CpuSplit  # over the timed window; "workers": the sending processes

    def cpu_note(self) -> str:
        """Where the machine's CPU went while the processes sent, and per send."""
        cpu, n = self.cpu, max(1, self.timed)
        server = "" if cpu.server is None else f" + postgres {cpu.server / n * 1e6:,.0f}"
        return (
            f"{cpu.describe('senders')}; CPU per send: senders {cpu.workers / n * 1e6:,.0f}"
            f"{server} µs"
        )

    @property
    def total(self) -> float:
        return sum(self.rates)


def several_processes(
    url: str, sizes: MachineSizes, tmp: Path, instances: int | None = None
) -> Parallel:
    """``instances`` instances (``sizes.instances`` by default; created through
    the API), then ``sizes.processes`` sending processes, started together once
    each is ready; the sends each instance received checked against its seq
    afterwards. With fewer instances than processes, every process sends to
    every instance (one instance: all of them contend for its row)."""
    instances = sizes.instances if instances is None else instances
    with prepared(url) as app:
        start = time.perf_counter()
        for i in range(instances):
            app.machines.create("toggle", f"t-{i}")
        create_seconds = time.perf_counter() - start
    logs = [tmp / f"sender-{i}.log" for i in range(sizes.processes)]
    reports: list[dict[str, Any]] = []
    with ExitStack() as stack:
        procs = []
        for i, log in enumerate(logs):
            command = [sys.executable, "-m", "bench.machines", "send", url, str(i)]
            command += [str(sizes.processes), str(instances)]
            err = stack.enter_context(log.open("ab"))
            proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env=bench_env(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
            stack.callback(_stop_text, proc)
            procs.append(proc)
        for proc, log in zip(procs, logs, strict=True):
            _expect_line(proc, "ready", log, 60)
        server_before = postgres_cpu_seconds()
        busy_before = machine_cpu_seconds()[0]
        window = time.monotonic()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(f"go {sizes.parallel_seconds}\n")
            proc.stdin.flush()
        for proc, log in zip(procs, logs, strict=True):
            line = _read_line(proc, log, sizes.parallel_seconds + 60)
            report = json.loads(line)
            if "error" in report:
                raise BenchError(f"a sender failed: {report['error']}:\n{log_tail(log)}")
            reports.append(report)
        window = time.monotonic() - window
        server_after = postgres_cpu_seconds()
        server = (
            None if server_before is None or server_after is None else server_after - server_before
        )
        cpu = CpuSplit(
            window,
            sum(float(r["cpu"]) for r in reports),
            server,
            machine_cpu_seconds()[0] - busy_before,
            os.cpu_count() or 1,
        )
    with prepared(url) as app:
        seqs = sum(i.seq - 1 for i in app.machines.instances("toggle"))
    if seqs != sum(int(r["sends"]) for r in reports):
        raise BenchError(
            f"the instances record {seqs:,} sends, the processes made "
            f"{sum(int(r['sends']) for r in reports):,}"
        )
    return Parallel(
        sizes.processes,
        instances,
        [int(r["timed"]) / float(r["seconds"]) for r in reports],
        sum(int(r["timed"]) for r in reports),
        max(float(r["seconds"]) for r in reports),
        create_seconds,
        cpu,
    )


def _read_line(proc: subprocess.Popen[str], log: Path, timeout: float) -> str:
    """The process's next line of output, or ``BenchError`` if it exits first
    or takes longer than ``timeout`` seconds."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"no answer from a sender in {timeout:.0f} s:\n{log_tail(log)}")
            if selector.select(min(left, 1.0)):
                line = proc.stdout.readline()
                if line:
                    return line.strip()
                proc.wait(5)
                raise BenchError(
                    f"a sender exited ({proc.returncode}) before answering:\n{log_tail(log)}"
                )


def _expect_line(proc: subprocess.Popen[str], want: str, log: Path, timeout: float) -> None:
    line = _read_line(proc, log, timeout)
    if line != want:
        raise BenchError(f"a sender said {line!r}, not {want!r}:\n{log_tail(log)}")


def _stop_text(proc: subprocess.Popen[str]) -> None:
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def parallel_row(found: Parallel, one: float | None) -> Row:
    """The several-processes figure: judged (>= 2x one instance) when they send
    to instances of their own; for comparison only when they share one."""
    per = ", ".join(f"{r:,.0f}" for r in found.rates)
    shared = found.instances < found.processes
    if shared:
        label = f"send, one instance, {found.processes} processes"
        how = (
            f"every process to the same instance ({per} /s): each finds the row moved by "
            "another and takes its lock; for comparison with the 1,000 instances above"
        )
    else:
        label = f"send, {found.instances:,} instances, {found.processes} processes"
        how = (
            f"each process to its own {found.instances // found.processes} instances in turn "
            f"({per} /s), after one untimed send to each (a process's first send to a row it "
            f"never wrote goes the locked way); every send counted in the instances' seqs; the "
            f"{found.instances:,} instances created through the API in "
            f"{found.create_seconds:.1f} s"
        )
    return judged(
        label,
        f"{found.total:,.0f} sends/s",
        found.total,
        one,
        "1 instance",
        "-" if shared else ">= 2.00x 1 instance",
        None if shared else 2.0,
        f"{found.timed:,} sends in {found.seconds:.1f} s, {how}; {found.cpu_note()}",
    )


# -- timer accuracy ------------------------------------------------------------------


@dataclass(frozen=True)
class Timers:
    armed: int
    api_sample: int
    api_seconds: float
    sql_seconds: float
    late_ms: list[float]
    fired_within: float  # seconds from the last creation to the last ring
    due_gap: float  # seconds between two alarms' creations

    @property
    def api_rate(self) -> float:
        return self.api_sample / self.api_seconds


# What ``create`` writes for a sleeper, in three statements on either backend:
# ``:first``/``:last`` number the keys, ``:now`` is the first one's creation
# (each next one a millisecond later), ``:due`` the delay in seconds.
SLEEPERS_SQLITE = (
    """
WITH RECURSIVE g(n) AS (SELECT :first UNION ALL SELECT n + 1 FROM g WHERE n < :last)
INSERT INTO machine_instances (machine, key, version, state, context, seq, final,
                               created_at, updated_at)
SELECT 'sleeper', 's-' || n, 1, 'waiting', '{}', 1, 0, :now + n * 0.001, :now + n * 0.001
FROM g
""",
    """
WITH RECURSIVE g(n) AS (SELECT :first UNION ALL SELECT n + 1 FROM g WHERE n < :last)
INSERT INTO machine_history (machine, key, seq, at, kind, event, from_state, to_state, data,
                             context, actor, transition, version, detail)
SELECT 'sleeper', 's-' || n, 1, :now + n * 0.001, 'created', NULL, NULL, 'waiting', NULL, '{}',
       NULL, NULL, 1, NULL
FROM g
""",
    """
WITH RECURSIVE g(n) AS (SELECT :first UNION ALL SELECT n + 1 FROM g WHERE n < :last)
INSERT INTO machine_timers (machine, key, state, event, due_at, seq)
SELECT 'sleeper', 's-' || n, 'waiting', 'expire', :now + n * 0.001 + :due, 1 FROM g
""",
)
SLEEPERS_POSTGRES = (
    """
INSERT INTO machine_instances (machine, key, version, state, context, seq, final,
                               created_at, updated_at)
SELECT 'sleeper', 's-' || n, 1, 'waiting', '{}', 1, false,
       %(now)s + n * 0.001, %(now)s + n * 0.001
FROM generate_series(%(first)s::int, %(last)s::int) AS n
""",
    """
INSERT INTO machine_history (machine, key, seq, at, kind, event, from_state, to_state, data,
                             context, actor, transition, version, detail)
SELECT 'sleeper', 's-' || n, 1, %(now)s + n * 0.001, 'created', NULL, NULL, 'waiting', NULL,
       '{}', NULL, NULL, 1, NULL
FROM generate_series(%(first)s::int, %(last)s::int) AS n
""",
    """
INSERT INTO machine_timers (machine, key, state, event, due_at, seq)
SELECT 'sleeper', 's-' || n, 'waiting', 'expire', %(now)s + n * 0.001 + %(due)s, 1
FROM generate_series(%(first)s::int, %(last)s::int) AS n
""",
)


def timer_accuracy(
    url: str,
    sizes: MachineSizes,
    tmp: Path,
    label: str,
    fill: Callable[[int, int], None],
    query: Query,
) -> Timers:
    """Arm ``sizes.armed`` timers 30 days ahead (``api_sample`` through the API,
    the rest by ``fill(first, last)``, which writes sleepers ``s-first`` to
    ``s-last`` as SQL), start ``instar worker``, then create ``sizes.due``
    alarms ``due_gap`` apart, each due ``DUE_DELAY`` later; wait until every
    one has rung; their lateness from their history. ``query`` reads the
    database with plain SQL (the count of armed timers)."""

    def far_timers() -> int:
        return int(query("SELECT count(*) FROM machine_timers WHERE machine = 'sleeper'")[0][0])

    with prepared(url) as app:
        m = app.machines
        start = time.perf_counter()
        for i in range(sizes.api_sample):
            m.create("sleeper", f"api-{i}")
        api_seconds = time.perf_counter() - start
        start = time.perf_counter()
        fill(1, sizes.armed - sizes.api_sample)
        sql_seconds = time.perf_counter() - start
        probe = m.verify("sleeper", f"s-{sizes.armed // 2}")
        if not probe.ok:
            raise BenchError(f"a sleeper written with SQL fails verify: {probe.problems}")
        armed = far_timers()
        if armed != sizes.armed:
            raise BenchError(f"{armed:,} timers armed, not {sizes.armed:,}")
        log = tmp / f"machines-timers-{label}.log"
        with started(instar_worker_command(url, burst=False), log, bench_env()) as proc:
            # The worker is up once it has run a job; a moment more to lead maintenance.
            job = app.enqueue("noop_sync")
            wait_for(lambda: app.get(job.id).state.value == "completed", 60, "starting",
                     proc, log)  # fmt: skip
            time.sleep(0.5)
            for i in range(sizes.due):
                m.create("alarm", f"a-{i}")
                time.sleep(sizes.due_gap)
            created = time.time()
            delay = float(DUE_DELAY.rstrip("s"))

            def rung() -> bool:
                return m.counts("alarm").get("rang", 0) >= sizes.due

            wait_for(rung, delay + 60, "firing the timers", proc, log, poll=0.1)
            fired_within = time.time() - created
            stop_process(proc)
        late: list[float] = []
        for i in range(sizes.due):
            entries = [e for e in m.history("alarm", f"a-{i}") if e.kind == "timer"]
            if len(entries) != 1 or entries[0].detail is None:
                raise BenchError(f"alarm a-{i}: {len(entries)} timer entries in its history")
            late.append(float(entries[0].detail["late_ms"]))
        still = far_timers()
        if still != sizes.armed:
            raise BenchError(f"{still:,} far timers armed after the run, not {sizes.armed:,}")
    return Timers(
        sizes.armed,
        sizes.api_sample,
        api_seconds,
        sql_seconds,
        sorted(late),
        fired_within,
        sizes.due_gap,
    )


def timer_rows(found: Timers, label: str) -> list[Row]:
    late = found.late_ms
    n = f"{found.armed:,}"
    estimate = found.armed / found.api_rate
    rows = [
        Row(
            f"arming {n} timers ({FAR_DELAY_DAYS} days ahead), {label}",
            f"{found.sql_seconds:.1f} s",
            "-",
            "-",
            None,
            f"{found.armed - found.api_sample:,} instances, history entries and timers "
            f"written with SQL in {found.sql_seconds:.1f} s (one of them checked by verify); "
            f"{found.api_sample:,} created through m.create one by one at "
            f"{found.api_rate:,.0f} /s: all {n} that way would take ~{estimate:,.0f} s",
        ),
        Row(
            f"timer lateness, {n} armed: p50",
            f"{percentile(late, 50):.0f} ms",
            "-",
            "-",
            None,
            f"{len(late)} timers due {DUE_DELAY} after their creation, created "
            f"~{found.due_gap * 1000:.0f} ms apart; late_ms of each one's history entry",
        ),
        Row(
            f"timer lateness, {n} armed: p99",
            f"{percentile(late, 99):.0f} ms",
            "-",
            "-",
            None,
            f"mean {statistics.fmean(late):.0f} ms",
        ),
        judged(
            f"timer lateness, {n} armed: max",
            f"{max(late):.0f} ms",
            max(late),
            1000.0,
            "1 s",
            "<= 1 s",
            1.0,
            f"instar worker (defaults: maintenance every 0.2 s) fired all {len(late)}; the last "
            f"one rang {found.fired_within:.1f} s after the last creation; the {n} far timers "
            "still armed afterwards",
            at_most=True,
        ),
    ]
    return rows


# -- the sections ------------------------------------------------------------------


def sqlite_section(rows: list[Row], sizes: Sizes, tmp: Path) -> None:
    """The SQLite figures: one instance against the raw commit rate, timers."""
    from bench.sqlite import raw_limit, sqlite_url

    msizes = sizes_for(sizes)
    progress.print("SQLite machines: send to one instance, in turns with raw commits ...")

    def raw(r: int) -> float:
        return raw_limit(tmp / f"machines-raw-{r}.db", sizes)[0]

    found = attempt(
        rows,
        "send, one instance, SQLite",
        lambda: one_instance(sqlite_url(tmp / "machines-one.db"), msizes, raw),
    )
    if found is not None:
        rows += one_instance_rows(found, "SQLite", "sqlite3 BEGIN/INSERT/COMMIT")
    progress.print(f"SQLite machines: timers, {msizes.armed:,} armed ...")
    path = tmp / "machines-timers.db"

    def fill(first: int, last: int) -> None:
        params = {"first": first, "last": last, "now": time.time()}
        params["due"] = FAR_DELAY_DAYS * 86_400.0
        with closing(sqlite3.connect(path, isolation_level=None, timeout=30)) as conn:
            conn.execute("BEGIN IMMEDIATE")
            for sql in SLEEPERS_SQLITE:
                conn.execute(sql, params)
            conn.execute("COMMIT")

    def timers() -> Timers:
        with closing(sqlite3.connect(path, timeout=30)) as conn:

            def query(sql: str) -> Sequence[Sequence[Any]]:
                return conn.execute(sql).fetchall()

            return timer_accuracy(sqlite_url(path), msizes, tmp, "sqlite", fill, query)

    found_timers = attempt(rows, "timer lateness, SQLite", timers)
    if found_timers is not None:
        rows += timer_rows(found_timers, "SQLite")


def postgres_section(rows: list[Row], pg: PostgresBench) -> None:
    """The PostgreSQL figures: one instance against the raw autocommit INSERT,
    several processes against one instance, timers."""
    msizes = sizes_for(pg.sizes)
    progress.print("PostgreSQL machines: send to one instance, in turns with raw commits ...")

    def one() -> Rounds:
        with pg.schema("machines_one") as (_, url, conn):
            conn.execute(b"CHECKPOINT")  # what the sections before wrote is flushed now, untimed
            return one_instance(url, msizes, lambda r: pg.raw_limit()[0])

    found = attempt(rows, "send, one instance, PostgreSQL", one)
    if found is not None:
        rows += one_instance_rows(found, "PostgreSQL", "psycopg autocommit INSERT")
    progress.print(
        f"PostgreSQL machines: {msizes.processes} processes, {msizes.instances:,} instances ..."
    )

    def several() -> Parallel:
        with pg.schema("machines_parallel") as (_, url, conn):
            conn.execute(b"CHECKPOINT")
            return several_processes(url, msizes, pg.tmp)

    parallel = attempt(rows, "send, several processes, PostgreSQL", several)
    if parallel is not None:
        rows.append(parallel_row(parallel, found.send_rate if found else None))
    progress.print(f"PostgreSQL machines: {msizes.processes} processes, one instance ...")

    def contended() -> Parallel:
        with pg.schema("machines_contended") as (_, url, conn):
            conn.execute(b"CHECKPOINT")
            return several_processes(url, msizes, pg.tmp, instances=1)

    shared = attempt(rows, "send, one instance, several processes, PostgreSQL", contended)
    if shared is not None:
        rows.append(parallel_row(shared, found.send_rate if found else None))
    progress.print(f"PostgreSQL machines: timers, {msizes.armed:,} armed ...")

    def timers() -> Timers:
        with pg.schema("machines_timers") as (_, url, conn):

            def fill(first: int, last: int) -> None:
                params = {"first": first, "last": last, "now": time.time()}
                params["due"] = FAR_DELAY_DAYS * 86_400.0
                with conn.transaction():
                    for sql in SLEEPERS_POSTGRES:
                        conn.execute(sql.encode(), params)
                conn.execute(b"ANALYZE machine_timers")

            def query(sql: str) -> Sequence[Sequence[Any]]:
                return conn.execute(sql.encode()).fetchall()

            return timer_accuracy(url, msizes, pg.tmp, "postgresql", fill, query)

    found_timers = attempt(rows, "timer lateness, PostgreSQL", timers)
    if found_timers is not None:
        rows += timer_rows(found_timers, "PostgreSQL")


def sqlite_title(load_at_start: float) -> str:
    return f"Durable machines on SQLite ({code_note()}; {load_note(load_at_start)})"


def postgres_title(load_at_start: float) -> str:
    return f"Durable machines on PostgreSQL ({code_note()}; {load_note(load_at_start)})"


def _main(argv: Sequence[str]) -> int:
    if argv and argv[0] == "send":
        return sender_main(argv[1:])
    print("usage: python -m bench.machines send URL FIRST STEP INSTANCES", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
