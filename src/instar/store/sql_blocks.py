"""Load named SQL blocks from a backend's ``.sql`` file.

A block starts with ``-- name: NAME``; the comment lines right after it say
why the query looks as it does. Runtime code holds no SQL strings of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType

from instar.lifecycle import Kind, states_of_kind


def load_blocks(package: str, filename: str) -> Mapping[str, str]:
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("-- name:"):
            name = line.removeprefix("-- name:").strip()
            if name in blocks:
                raise ValueError(f"{filename}: block {name!r} is defined twice")
            current = blocks[name] = []
        elif current is not None and not line.lstrip().startswith("--"):
            current.append(line)
    return MappingProxyType({name: "\n".join(lines).strip() for name, lines in blocks.items()})


def load_migrations(package: str) -> list[tuple[int, str, str]]:
    """Migrations are files named ``NNNN_description.sql``; returns them in order."""
    found = []
    for entry in resources.files(package).iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def _sql_list(kind: Kind) -> str:
    return ", ".join(f"'{s.value}'" for s in sorted(states_of_kind(kind)))


def load_queries(package: str) -> Mapping[str, str]:
    """A backend's ``queries.sql``, with ``{leased}`` and ``{terminal}`` filled in
    from the lifecycle table: the SQL names sets of states by kind, never by hand."""
    return MappingProxyType(
        {
            name: sql.replace("{leased}", _sql_list(Kind.LEASED)).replace(
                "{terminal}", _sql_list(Kind.TERMINAL)
            )
            for name, sql in load_blocks(package, "queries.sql").items()
        }
    )
