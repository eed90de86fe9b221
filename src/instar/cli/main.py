"""The ``instar`` command: the click group and its commands, gathered from one module per topic.

The commands are thin shells over the App; none touches SQL. ``instar.cli.common`` holds what
they share, including how an error becomes a line on stderr and an exit code. A topic's module
is imported when one of its commands runs (every one of them for ``--help``): a worker process
does not load the dashboard's, the machines' or the output schemas' code.
"""

from __future__ import annotations

import importlib
import io
import sys

import click

from instar.cli.common import InstarGroup, setup_logging

TOPICS: dict[str, tuple[str, ...]] = {
    "jobs": ("enqueue", "jobs", "show", "cancel", "retry", "pause", "resume", "stop"),
    "signals": ("resolve", "reject"),
    "queues": ("queues", "pause-queue", "resume-queue"),
    "periodic": ("periodic", "pause-periodic", "resume-periodic"),
    "worker": ("worker",),
    "database": ("migrate", "lifecycle", "demo", "prune"),
    "web": ("serve", "token"),
    "machines": ("machines",),
}
"""Each module of ``instar.cli`` and the names of the commands in its ``COMMANDS``."""


class LazyGroup(InstarGroup):
    """The group whose commands are imported from their topic's module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for names in TOPICS.values() for name in names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        for topic, names in TOPICS.items():
            if cmd_name in names:
                module = importlib.import_module(f"instar.cli.{topic}")
                found: tuple[click.Command, ...] = module.COMMANDS
                return next(command for command in found if command.name == cmd_name)
        return None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="instar")
def cli() -> None:
    """Instar: durable jobs with an explicit lifecycle.

    Commands on a database take --database URL; without it, the URL written in the --app
    module's code, else $INSTAR_DATABASE, else ./instar.db. Errors are one line on
    stderr; exit codes: 2 bad option, 3 refused transition, 4 unknown id, 5 unknown
    job name, 6 bad payload, 7 bad configuration.
    """
    setup_logging()


def main() -> None:
    # Text that is not valid Unicode (a file name from os.listdir, say) prints
    # escaped rather than ending the command.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    cli(prog_name="instar")


if __name__ == "__main__":
    main()
