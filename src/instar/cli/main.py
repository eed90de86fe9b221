"""The ``instar`` command: the click group and its commands, gathered from one module per topic.

The commands are thin shells over the App; none touches SQL. ``instar.cli.common`` holds what
they share, including how an error becomes a line on stderr and an exit code.
"""

from __future__ import annotations

import io
import sys

import click

from instar.cli import database, jobs, machines, periodic, queues, signals, web, worker
from instar.cli.common import InstarGroup, setup_logging


@click.group(cls=InstarGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="instar")
def cli() -> None:
    """Instar: durable jobs with an explicit lifecycle.

    Commands on a database take --database URL; without it, the URL written in the --app
    module's code, else $INSTAR_DATABASE, else ./instar.db. Errors are one line on
    stderr; exit codes: 2 bad option, 3 refused transition, 4 unknown id, 5 unknown
    job name, 6 bad payload, 7 bad configuration.
    """
    setup_logging()


for _command in (
    *jobs.COMMANDS,
    *signals.COMMANDS,
    *queues.COMMANDS,
    *periodic.COMMANDS,
    *worker.COMMANDS,
    *database.COMMANDS,
    *web.COMMANDS,
    *machines.COMMANDS,
):
    cli.add_command(_command)


def main() -> None:
    # Text that is not valid Unicode (a file name from os.listdir, say) prints
    # escaped rather than ending the command.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    cli(prog_name="instar")


if __name__ == "__main__":
    main()
