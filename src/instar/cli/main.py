"""The ``instar`` command: the click group and its commands, gathered from one module per topic.

The commands are thin shells over the App; none touches SQL. ``instar.cli.common`` holds what
they share, including how an error becomes a line on stderr and an exit code.
"""

from __future__ import annotations

import click

from instar.cli import database, jobs, queues, signals, worker


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="instar")
def cli() -> None:
    """Instar: durable jobs with an explicit lifecycle."""


for _command in (
    *jobs.COMMANDS,
    *signals.COMMANDS,
    *queues.COMMANDS,
    *worker.COMMANDS,
    *database.COMMANDS,
):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="instar")


if __name__ == "__main__":
    main()
