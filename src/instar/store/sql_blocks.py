"""Load named SQL blocks from a backend's ``.sql`` file.

A block starts with ``-- name: NAME``; the comment lines right after it say
why the query looks as it does. Runtime code holds no SQL strings of its own.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from importlib import resources
from types import MappingProxyType

from instar.lifecycle import CLAIM, Kind, State, states_of_kind
from instar.vocabulary import AwakeableState, DependencyKind


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


_PLACEHOLDER = re.compile(r"\{([a-z_]+)(?::([a-z-]+))?\}")
_VOCABULARY: Mapping[str, Callable[[str], enum.StrEnum]] = {
    "state": State,
    "awakeable": AwakeableState,
    "dependency": DependencyKind,
}
_RUNTIME = frozenset({"schema", "channel"})  # filled in when the statement runs


def fill(name: str, sql: str) -> str:
    """Replace the lifecycle placeholders of one block; refuse any it does not know.

    ``{claim_from}``/``{claim_to}``: the two ends of the claim (``lifecycle.CLAIM``);
    ``{state:NAME}``, ``{awakeable:NAME}``, ``{dependency:NAME}``: one name,
    checked against its enum; ``{KIND}`` (e.g. ``{leased}``, ``{terminal}``):
    every state of that kind.
    """

    def replace(match: re.Match[str]) -> str:
        word, arg = match.group(1), match.group(2)
        if word == "claim_from" and arg is None:
            return f"'{CLAIM[0].value}'"
        if word == "claim_to" and arg is None:
            return f"'{CLAIM[1].value}'"
        vocabulary = _VOCABULARY.get(word)
        if vocabulary is not None and arg is not None:
            try:
                return f"'{vocabulary(arg).value}'"
            except ValueError:
                raise ValueError(f"query {name!r}: {arg!r} is not a {word}") from None
        if arg is None and word in Kind.__members__.values():
            return ", ".join(f"'{s.value}'" for s in sorted(states_of_kind(Kind(word))))
        if arg is None and word in _RUNTIME:
            return match.group(0)
        raise ValueError(f"query {name!r}: unknown placeholder {match.group(0)}")

    return _PLACEHOLDER.sub(replace, sql)


QUERY_FILES = ("queries.sql", "machines.sql")
"""A backend's named queries: the jobs' and the durable machines'."""


def load_queries(package: str) -> Mapping[str, str]:
    """A backend's queries (``QUERY_FILES``), with the lifecycle's states filled
    in from the table: the SQL names states by kind or through a checked
    placeholder. A name defined in two files is refused."""
    queries: dict[str, str] = {}
    for filename in QUERY_FILES:
        for name, sql in load_blocks(package, filename).items():
            if name in queries:
                raise ValueError(f"{filename}: block {name!r} is defined in another file too")
            queries[name] = fill(name, sql)
    return MappingProxyType(queries)
