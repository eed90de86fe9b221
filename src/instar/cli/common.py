"""What every command shares: the --database, --app and --json options, the consoles,
finding and opening the App (always closed again), reading JSON options, job ids, and the
one mapping of errors to exit codes (every error is one line on stderr).

Which database a command works on, in one rule: ``--database`` on the command line,
else the URL written in the ``--app`` module's code (``App(url)``), else
``$INSTAR_DATABASE``, else ``./instar.db``. A choice that overrides another that
differs is said on stderr.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import click

from instar.app import App, DatabaseSource
from instar.errors import ConfigurationError, InstarError, InvalidOption
from instar.registry.limits import MAX_ID, shown, utf8_problem
from instar.store.urls import redact

if TYPE_CHECKING:
    from rich.console import Console

    out: Console
    """The console on stdout."""
    err: Console
    """The console on stderr."""

P = ParamSpec("P")
R = TypeVar("R")


def __getattr__(name: str) -> Console:
    """``out`` and ``err``, made on first use: Rich (~50 ms of imports) is not
    loaded by a command that prints nothing through it, such as a worker until
    its last line."""
    if name not in ("out", "err"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return _console(name)


def _console(name: str) -> Console:
    found: Console | None = globals().get(name)
    if found is None:
        from rich.console import Console

        found = globals()[name] = Console(stderr=name == "err", highlight=False, soft_wrap=True)
    return found


database_option = click.option(
    "--database",
    default=None,
    help=(
        "Database URL (sqlite:///path.db or postgresql://...). Default: the URL written "
        "in the --app module's code, else $INSTAR_DATABASE, else ./instar.db."
    ),
)
app_option = click.option(
    "--app",
    "app_ref",
    envvar="INSTAR_APP",
    default=None,
    help="Where your handlers are registered, as module:attribute (e.g. myproj.tasks:app).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def printable(text: str) -> str:
    """``text`` with anything a terminal cannot take escaped (lone surrogates from
    undecodable command-line bytes), so that printing an error never fails itself."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_line(message: str) -> None:
    """One line on stderr: ``error: message``."""
    from rich.markup import escape

    _console("err").print(f"[bold red]error:[/] {escape(printable(message))}", markup=True)


def note_line(message: str) -> None:
    """One line on stderr: ``note: message`` (a choice the user may not expect)."""
    from rich.markup import escape

    _console("err").print(f"[yellow]note:[/] {escape(printable(message))}", markup=True)


def reports_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Refuse text options that are not valid UTF-8, then run the command; any Instar
    error becomes one line on stderr and the exit code its class carries."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            _check_text_options(kwargs)
            return fn(*args, **kwargs)
        except InstarError as error:
            error_line(str(error))
            sys.exit(error.exit_code)

    return wrapper


def _check_text_options(values: dict[str, Any]) -> None:
    """Python turns a byte that is not UTF-8 (``\\xff``) in an argument into a lone
    surrogate; no database and no terminal takes one. Refuse it, naming the option."""
    context = click.get_current_context(silent=True)
    params = {p.name: p for p in context.command.params} if context is not None else {}
    for name, value in values.items():
        for text in value if isinstance(value, tuple) else (value,):
            problem = utf8_problem(text) if isinstance(text, str) else None
            if problem is not None:
                param = params.get(name)
                label = name if param is None else _label(param)
                raise InvalidOption(f"{label} {shown(text)} {problem}; pass text in UTF-8")


def _label(param: click.Parameter) -> str:
    if isinstance(param, click.Option):
        return max(param.opts, key=len)
    return (param.name or "argument").upper()


def load_app(app_ref: str | None, database: str | None, *, read_only: bool = False) -> App:
    """The user's App from ``module:attr``, or a bare one; on ``database`` if given
    (``--database`` overrides even a URL written in code, and says so when it differs).
    ``ConfigurationError`` (one line) for a reference that cannot be imported."""
    app = App(read_only=read_only) if app_ref is None else _import_app(app_ref)
    environment = os.environ.get("INSTAR_DATABASE") or None
    if (
        database is None
        and environment is not None
        and environment != app.database
        and app.database_source in (DatabaseSource.ENVIRONMENT, DatabaseSource.DEFAULT)
    ):
        # An App() with no URL takes $INSTAR_DATABASE as the command runs, even if its
        # module was imported before the variable was set.
        app.use_database(environment, DatabaseSource.ENVIRONMENT)
    if database is not None:
        if database != app.database and app.database_source in (
            DatabaseSource.CODE,
            DatabaseSource.ENVIRONMENT,
        ):
            where = f"in {app_ref}" if app.database_source is DatabaseSource.CODE else ""
            note_line(
                f"using --database {redact(database)}, not {redact(app.database)} "
                f"({app.database_source}{' ' + where if where else ''})"
            )
        app.use_database(database)
    return app


def _import_app(app_ref: str) -> App:
    app = import_object(app_ref, "--app", example="tasks:app")
    if not isinstance(app, App):
        module_name, _, attr = app_ref.partition(":")
        raise ConfigurationError(
            f"--app {app_ref!r}: {attr!r} in {module_name} is not an instar.App"
        )
    return app


def import_object(ref: str, option: str, *, example: str) -> object:
    """The attribute ``attr`` of module ``module`` for ``ref`` given as
    ``module:attr`` to ``option`` (imported from the current folder first).
    ``ConfigurationError`` (one line, naming ``option`` and showing ``example``)
    for a malformed reference, a module that cannot be imported or a missing
    attribute."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(
            f"{option} {ref!r} must look like module:attribute, e.g. {example}"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (
            module_name == exc.name or module_name.startswith(exc.name + ".")
        ):
            raise ConfigurationError(
                f"cannot import {module_name!r} for {option} {ref!r}: no module named "
                f"{exc.name!r}; run instar from the folder that holds it, or set PYTHONPATH"
            ) from None
        raise ConfigurationError(_import_failure(module_name, option, ref, exc)) from None
    except SystemExit as exc:
        raise ConfigurationError(
            f"cannot import {module_name!r} for {option} {ref!r}: it called "
            f"sys.exit({exc.code!r}) while being imported"
        ) from None
    except Exception as exc:
        raise ConfigurationError(_import_failure(module_name, option, ref, exc)) from None
    missing = object()
    found = getattr(module, attr, missing)
    if found is missing:
        raise ConfigurationError(f"{option} {ref!r}: {module_name} has no {attr!r}")
    return found


def _import_failure(module_name: str, option: str, ref: str, exc: BaseException) -> str:
    """One line: the module, the error's type and message, and where it was raised."""
    where = ""
    message = str(exc)
    if isinstance(exc, SyntaxError):
        message = exc.msg
        if exc.filename:
            where = f"{_short_path(exc.filename)}, line {exc.lineno}"
    else:
        frames = [
            frame
            for frame in traceback.extract_tb(exc.__traceback__)
            if not frame.filename.startswith("<frozen")
        ]
        if frames:
            where = f"{_short_path(frames[-1].filename)}, line {frames[-1].lineno}"
    message = " ".join(message.split())
    if len(message) > 300:
        message = message[:299] + "…"
    located = f" ({where})" if where else ""
    return (
        f"cannot import {module_name!r} for {option} {ref!r}: "
        f"{type(exc).__name__}: {message}{located}"
    )


def _short_path(filename: str) -> str:
    """A file name relative to the current folder when it lies inside it."""
    try:
        return str(Path(filename).resolve().relative_to(Path.cwd()))
    except ValueError:
        return filename


@contextmanager
def opened_app(
    database: str | None, app_ref: str | None = None, *, read_only: bool = False
) -> Iterator[App]:
    """The App a command works on (see ``load_app``), closed when the command ends,
    whether it succeeds or raises. ``read_only``: the database is only read; a
    missing one is an error, never created (``ConfigurationError``)."""
    app = load_app(app_ref, database, read_only=read_only)
    try:
        yield app
    finally:
        app.close()


def print_json(data: Any) -> None:
    """Print JSON-compatible data (a shape's ``as_json()``, or a list or dict of them)."""
    _console("out").print_json(json.dumps(data))


def read_json(text: str, option: str) -> Any:
    """The value of a JSON option: the JSON itself, ``@path`` (a file's contents) or
    ``-`` (standard input). ``InvalidOption`` for a file that cannot be read, text
    that is not UTF-8, or JSON that does not parse."""
    source = option
    if text == "-":
        source = f"{option} - (standard input)"
        data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read()
        text = _utf8(data, source)
    elif text.startswith("@"):
        path = Path(text[1:])
        source = f"{option} {text}"
        try:
            text = _utf8(path.read_bytes(), source)
        except OSError as exc:
            raise InvalidOption(
                f"cannot read {option} file {str(path)!r}: {exc.strerror or exc}"
            ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidOption(f"{source} is not valid JSON: {exc}") from None


def _utf8(data: bytes | str, source: str) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidOption(
            f"{source} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None


def job_id(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """A job id argument or option (a click callback): a whole number from 1 to
    2**63 - 1; anything else is a usage error that says so in one line."""
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()):
        raise click.BadParameter(
            f"{shown(printable(text))} is not a job id; ids are whole numbers from 1 to {MAX_ID}",
            ctx,
            param,
        )
    number = int(text)
    if not 1 <= number <= MAX_ID:
        raise click.BadParameter(
            f"job id {number} is out of range; ids are from 1 to {MAX_ID}", ctx, param
        )
    return number


class InstarGroup(click.Group):
    """The ``instar`` group: click's own errors (a missing argument, an unknown
    option, a bad value) are one line too, like Instar's."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            if not standalone_mode:
                raise
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            if not standalone_mode:
                raise
            hint = f"; see '{exc.ctx.command_path} --help'" if exc.ctx is not None else ""
            error_line(f"{exc.format_message().rstrip('.')}{hint}")
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            if not standalone_mode:
                raise
            error_line(exc.format_message())
            sys.exit(exc.exit_code)
        except click.Abort:
            if not standalone_mode:
                raise
            error_line("aborted")
            sys.exit(130)
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)


class _Formatter(logging.Formatter):
    """Level names in lower case (``warning: ...``), and nothing a terminal cannot print."""

    def format(self, record: logging.LogRecord) -> str:
        """One line per line of the message, each with the record's prefix (a worker
        logs a batch of per-job lines as one record)."""
        lines = record.getMessage().split("\n")
        first = logging.makeLogRecord(
            {
                **record.__dict__,
                "msg": lines[0],
                "args": None,
                "levelname": record.levelname.lower(),
            }
        )
        head = super().format(first)
        if len(lines) == 1:
            return printable(head)
        prefix = head[: head.index(lines[0])] if lines[0] else head
        return printable("\n".join([head, *(prefix + line for line in lines[1:])]))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers: ``time`` (ISO 8601, UTC),
    ``level``, ``logger``, ``message``; a worker's per-job lines (the
    ``instar_jobs`` of a record, see ``instar.worker.job_log``) each become an
    object of their own with their fields; an exception, its text under
    ``error``."""

    def format(self, record: logging.LogRecord) -> str:
        head = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        lines: list[dict[str, Any]] = getattr(record, "instar_jobs", None) or [
            {"message": record.getMessage()}
        ]
        if record.exc_info:
            lines = [{**line, "error": self.formatException(record.exc_info)} for line in lines]
        return "\n".join(json.dumps({**head, **line}, ensure_ascii=False) for line in lines)


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (a test may swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


_installed: list[logging.Handler] = []
"""The handler ``setup_logging`` installed, once it has."""


def setup_logging(
    level: int = logging.WARNING,
    fmt: str = "%(levelname)s: %(message)s",
    datefmt: str | None = None,
    *,
    as_json: bool = False,
) -> None:
    """Log to stderr at ``level`` in ``fmt`` (``as_json``: one JSON object per
    line, ``JsonFormatter``): the command's warnings, a worker's log. A program
    that configured logging itself (a test run, an embedding) keeps its own
    setup untouched."""
    root = logging.getLogger()
    if not _installed:
        if root.handlers:
            return
        _installed.append(_StderrHandler())
        root.addHandler(_installed[0])
    elif _installed[0] not in root.handlers:
        return
    _installed[0].setFormatter(JsonFormatter() if as_json else _Formatter(fmt, datefmt))
    root.setLevel(level)
