"""Machines written in TOML: parsed, never evaluated, and located line by line.

The format is the contract in the README (``[machine]``, ``[context]``,
``[events.NAME]``, ``[states.PATH]`` with nested ``states``,
``[[transitions]]``). ``tomllib`` gives plain data; this module only finds
where each table starts, so that every problem names its file and line.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from instar.errors import InvalidMachine
from instar.machines.definition import Locate

MAX_FILE_BYTES = 4 * 1024 * 1024
"""A machine file larger than this is refused before it is parsed."""

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


def read_file(path: str | Path) -> tuple[dict[str, Any], Locate]:
    """The raw definition in the TOML file ``path`` and where its parts are;
    ``InvalidMachine`` for a file that cannot be read, is not UTF-8 or is not
    TOML."""
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidMachine(source, [f"{source}: cannot read the file ({exc.strerror})"]) from None
    if len(data) > MAX_FILE_BYTES:
        raise InvalidMachine(source, [f"{source}: over {MAX_FILE_BYTES:,} bytes"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMachine(
            source, [f"{source}: not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"]
        ) from None
    return read_text(text, source)


def read_text(text: str, source: str = "<text>") -> tuple[dict[str, Any], Locate]:
    """The raw definition in TOML ``text`` (named ``source`` in messages)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidMachine(source, [f"{source}: not valid TOML: {exc}"]) from None
    except RecursionError:
        raise InvalidMachine(source, [f"{source}: nested too deeply to read"]) from None
    return raw, _locator(text, source)


def _locator(text: str, source: str) -> Locate:
    lines: dict[str, int] = {}
    transitions = 0
    for number, line in enumerate(text.splitlines(), start=1):
        match = _HEADER.match(line)
        if match is None:
            continue
        brackets, name = match.group(1), match.group(2)
        parts = [p.strip().strip('"').strip("'") for p in name.split(".")]
        if brackets == "[[" and parts == ["transitions"]:
            lines.setdefault(f"transitions.{transitions}", number)
            transitions += 1
            continue
        if parts and parts[0] == "states":
            # states.a.states.b -> states.a.b
            kept = [parts[0]] + [p for i, p in enumerate(parts[1:]) if i % 2 == 0]
            lines.setdefault(".".join(kept), number)
        else:
            lines.setdefault(".".join(parts), number)

    def locate(where: str) -> str:
        key = where
        while key:
            if key in lines:
                return f"{source}:{lines[key]}: {where}"
            key = key.rpartition(".")[0]
        return f"{source}: {where}"

    return locate


def located(raw: Mapping[str, Any]) -> Locate:
    """Where parts of a definition that has no file are: by name only."""

    def locate(where: str) -> str:
        machine = raw.get("machine")
        name = machine.get("name") if isinstance(machine, dict) else None
        return f"{name}: {where}" if isinstance(name, str) else where

    return locate
