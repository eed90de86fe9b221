"""Instar's speed on SQLite and on PostgreSQL (issue 15), each figure beside the
peer queue, the bare loop or the raw limit it is judged by, all measured in the
same run.

Why the raw limits: every commit waits for the disk (SQLite ``synchronous=FULL``,
PostgreSQL ``synchronous_commit=on``), so a figure in jobs/s says little until
it is set beside what the plain driver manages on the same disk in the same run:
one committed single-row INSERT at a time (the raw limit), and a claim/complete
loop with one event per move in plain Python (the bare loop). The peers are
pgqueuer on PostgreSQL and huey (``SqliteHuey``) on SQLite, each run the way
its documentation says, with its defaults, interleaved with Instar's runs so
that drifts in the machine's load touch both.

Run ``make bench`` (about a quarter of an hour) or ``make bench-quick`` (about a
minute; smaller sizes, and the tables say so): both build ``.venv-bench`` with
the peers pinned in bench/requirements.txt. ``--backend sqlite|postgresql`` for
one of them; ``--no-memory`` skips the long memory run. Workers run as separate
processes, started as a user starts them (``instar worker --burst``, default
concurrency). On PostgreSQL each measurement gets a schema of its own
(``bench_<pid>_<what>``), dropped afterwards, also when the run fails or is
interrupted.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.harness import Row

ROOT = Path(__file__).resolve().parent.parent
# ``python bench/run.py`` puts bench/ on the path, not the repository root that
# ``bench.*`` needs (worker subprocesses get the root through PYTHONPATH).
sys.path.insert(0, str(ROOT))

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM ends the run as Ctrl-C does: workers stopped, schemas dropped."""
    raise KeyboardInterrupt


def snapshot_source(tmp: Path) -> str:
    """Copy src/instar into ``tmp/src`` and put it first on the path of this
    process and of every process it starts: the whole run measures one version
    of Instar, even if src/ changes meanwhile. Returns what was measured."""
    target = tmp / "src" / "instar"
    shutil.copytree(ROOT / "src" / "instar", target, ignore=shutil.ignore_patterns("__pycache__"))
    digest = hashlib.sha256()
    for path in sorted(target.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(target)).encode() + b"\0" + path.read_bytes())
    # Bytecode once, as pip writes it for a package it installs (the peers'
    # came that way): where PYTHONDONTWRITEBYTECODE is set, as on this machine
    # kind, every worker process would otherwise compile Instar from source as
    # it starts (~0.15 s of CPU each: an empty burst worker took 0.77 s, 0.62
    # with bytecode). The bench's own modules (the handlers) likewise.
    compileall.compile_dir(target, quiet=1)
    compileall.compile_dir(ROOT / "bench", quiet=1)
    sys.path.insert(0, str(tmp / "src"))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(tmp / "src"), os.environ.get("PYTHONPATH")) if p
    )

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        except OSError:
            return ""
        return done.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "?"
    changed = " + local changes" if git("status", "--porcelain", "--", "src") else ""
    return f"git {head}{changed}, src/instar sha256 {digest.hexdigest()[:10]}"


def section(
    name: str,
    measure: Callable[[list[Row]], None],
    title: Callable[[], str],
    caption: Callable[[], str],
) -> tuple[int, list[Row]]:
    """One backend's measurements and their table, printed even when a later
    measurement fails or the run is interrupted; the exit status and the rows."""
    from bench.harness import out, progress, render

    rows: list[Row] = []
    status = 0
    try:
        measure(rows)
    except Exception as error:  # reported; the other backend still runs
        progress.print(f"[bold red]{name} bench failed:[/] {error}", markup=True, highlight=False)
        status = 2
    finally:
        if rows:
            out.print(render(title(), caption(), rows))
        if any(row.value == "failed" for row in rows):
            status = max(status, 2)
    return status, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a smaller run of about a minute")
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgresql", "all"),
        default="all",
        help="which database to measure (default: all)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("INSTAR_BENCH_POSTGRES", DEFAULT_POSTGRES),
        help="the PostgreSQL database to measure in (default: $INSTAR_BENCH_POSTGRES "
        "or %(default)s); each measurement adds a schema of its own and drops it",
    )
    parser.add_argument(
        "--no-memory", action="store_true", help="skip the memory run (the longest one)"
    )
    only = parser.add_mutually_exclusive_group()
    only.add_argument(
        "--dashboard-only",
        action="store_true",
        help="only the dashboard's figures (a few minutes), on the backends chosen",
    )
    only.add_argument(
        "--machines-only",
        action="store_true",
        help="only the durable machines' figures (a few minutes), on the backends chosen",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when a figure misses its target"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the SQLite databases and worker logs, print where"
    )
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="instar-bench-"))
    os.environ["INSTAR_BENCH_CODE"] = snapshot_source(tmp)
    # Imported only now, so that they (and Instar) come from the snapshot.
    from bench import machines, postgres, web
    from bench.dashboard import CAPTION as DASHBOARD_CAPTION
    from bench.harness import FULL, QUICK, cpu_table, out, progress
    from bench.sqlite import SqliteBench

    sizes = QUICK if args.quick else FULL
    signal.signal(signal.SIGTERM, _interrupt)
    if os.getloadavg()[0] > 1.0:
        progress.print(
            f"note: the load average is {os.getloadavg()[0]:.1f}; other work on this machine "
            "(or on the PostgreSQL server) lowers every figure"
        )
    statuses: list[int] = []
    rows: list[Row] = []
    # A folder per backend: worker logs and stamp files are named after the run.
    (tmp / "sqlite").mkdir()
    (tmp / "postgresql").mkdir()
    lite = SqliteBench(sizes, tmp / "sqlite")
    pg = postgres.PostgresBench(args.postgres_url, sizes, tmp / "postgresql")
    one_section = args.dashboard_only or args.machines_only
    try:
        if args.backend in ("sqlite", "all") and not one_section:
            status, found = section(
                "SQLite",
                lambda into: lite.run(into, memory=not args.no_memory),
                lite.title,
                lite.caption,
            )
            statuses.append(status)
            rows += found
        if args.backend in ("sqlite", "all") and not one_section:
            (tmp / "http").mkdir()
            status, found = section(
                "HTTP",
                lambda into: web.run(into, sizes, tmp / "http"),
                lambda: "The HTTP API (instar serve) on SQLite",
                lambda: web.CAPTION,
            )
            statuses.append(status)
            rows += found
        if args.backend in ("sqlite", "all") and not args.machines_only:
            status, found = section(
                "Dashboard, SQLite",
                lite.dashboard,
                lambda: "The dashboard (instar serve) on SQLite",
                lambda: DASHBOARD_CAPTION,
            )
            statuses.append(status)
            rows += found
        if args.backend in ("sqlite", "all") and not args.dashboard_only:
            machines_start = os.getloadavg()[0]
            status, found = section(
                "Machines, SQLite",
                lambda into: machines.sqlite_section(into, sizes, tmp / "sqlite"),
                lambda: machines.sqlite_title(machines_start),
                lambda: machines.CAPTION,
            )
            statuses.append(status)
            rows += found
        if args.backend in ("postgresql", "all") and not one_section:
            status, found = section("PostgreSQL", pg.run, pg.title, pg.caption)
            statuses.append(status)
            rows += found
        if args.backend in ("postgresql", "all") and not args.machines_only:
            status, found = section(
                "Dashboard, PostgreSQL",
                pg.dashboard,
                lambda: "The dashboard (instar serve) on PostgreSQL",
                lambda: DASHBOARD_CAPTION,
            )
            statuses.append(status)
            rows += found
        if args.backend in ("postgresql", "all") and not args.dashboard_only:
            machines_start = os.getloadavg()[0]
            status, found = section(
                "Machines, PostgreSQL",
                lambda into: machines.postgres_section(into, pg),
                lambda: machines.postgres_title(machines_start),
                lambda: machines.CAPTION,
            )
            statuses.append(status)
            rows += found
            if pg.cpu_runs:
                out.print(
                    cpu_table(
                        f"How the CPU split in the PostgreSQL processing runs "
                        f"({os.cpu_count()} cores shared by the workers and the server)",
                        pg.cpu_runs,
                    )
                )
    except KeyboardInterrupt:
        progress.print("interrupted; workers stopped")
        statuses.append(130)
    finally:
        pg.drop_schemas()
        if args.keep:
            progress.print(f"databases and logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    status = max(statuses, default=0)
    if status:
        return status
    return 1 if args.strict and any(row.met is False for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
