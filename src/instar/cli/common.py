"""What every command shares: the --database, --app and --json options, the consoles,
finding and opening the App (always closed again), and the one mapping of errors to exit codes.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

import click
from rich.console import Console

from instar.app import App
from instar.errors import ConfigurationError, InstarError

P = ParamSpec("P")
R = TypeVar("R")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

database_option = click.option(
    "--database",
    envvar="INSTAR_DATABASE",
    default=None,
    help="Database URL (sqlite:///path.db); default $INSTAR_DATABASE or ./instar.db.",
)
app_option = click.option(
    "--app",
    "app_ref",
    envvar="INSTAR_APP",
    default=None,
    help="Where your handlers are registered, as module:attribute (e.g. myproj.tasks:app).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def reports_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn any Instar error into one line on stderr and the exit code its class carries."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except InstarError as error:
            err.print(f"[bold red]error:[/] {error}", markup=True)
            sys.exit(error.exit_code)

    return wrapper


def load_app(app_ref: str | None, database: str | None) -> App:
    """The user's App from ``module:attr`` (bound to ``database`` if given), or a bare one."""
    if app_ref is None:
        return App(database)
    module_name, _, attr = app_ref.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(
            f"--app {app_ref!r} must look like module:attribute, e.g. tasks:app"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"cannot import {module_name!r} for --app {app_ref!r}: {exc}"
        ) from None
    app = getattr(module, attr, None)
    if not isinstance(app, App):
        raise ConfigurationError(
            f"--app {app_ref!r}: {attr!r} in {module_name} is not an instar.App"
        )
    if database is not None:
        app.database = database
    return app


@contextmanager
def opened_app(database: str | None, app_ref: str | None = None) -> Iterator[App]:
    """The App a command works on (see ``load_app``), closed when the command ends,
    whether it succeeds or raises."""
    app = load_app(app_ref, database)
    try:
        yield app
    finally:
        app.close()


def print_json(data: Any) -> None:
    """Print JSON-compatible data (a shape's ``as_json()``, or a list or dict of them)."""
    out.print_json(json.dumps(data))
