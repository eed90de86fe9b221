"""Drawings of a transition table: a text table, Mermaid and Graphviz DOT.

One model (a ``TransitionTable``: the jobs' lifecycle by default, or a
user-defined machine), several renderers; the README's lifecycle section is
the Mermaid output for jobs, checked for drift by a test.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Literal, assert_never

from instar.lifecycle import JOBS
from instar.table import TransitionTable

Format = Literal["table", "mermaid", "dot"]


def render(fmt: Format, table: TransitionTable[Any] | None = None) -> str:
    """``table`` (the job lifecycle when None) drawn in ``fmt``."""
    drawn = table if table is not None else JOBS
    match fmt:
        case "table":
            return _table(drawn)
        case "mermaid":
            return _mermaid(drawn)
        case "dot":
            return _dot(drawn)
        case _:
            assert_never(fmt)


def _table(table: TransitionTable[Any]) -> str:
    rows = [("state", "kind", "may move to", "meaning")]
    for state in table.states:
        targets = ", ".join(str(s) for s in table.targets(state)) or "-"
        rows.append(
            (str(state), table.kinds.get(state, ""), targets, table.meanings.get(state, ""))
        )
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + "  "
        + row[3]
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def _node(state: Hashable) -> str:
    return str(state).replace("-", "_").replace(".", "__")


def _mermaid(table: TransitionTable[Any]) -> str:
    lines = ["stateDiagram-v2"]
    lines += [f"    [*] --> {_node(s)}" for s in table.states if s in table.entry]
    for state in table.states:
        for target in table.targets(state):
            lines.append(f"    {_node(state)} --> {_node(target)}")
        if state in table.final:
            lines.append(f"    {_node(state)} --> [*]")
    return "\n".join(lines)


def _dot(table: TransitionTable[Any]) -> str:
    name = _node(table.name).replace(" ", "_")
    lines = [f"digraph {name} {{", "    rankdir=LR;"]
    for state in table.states:
        shape = "doublecircle" if state in table.final else "ellipse"
        kind = table.kinds.get(state, "")
        lines.append(f'    "{state}" [shape={shape}, tooltip="{kind}"];')
    for state in table.states:
        for target in table.targets(state):
            lines.append(f'    "{state}" -> "{target}";')
    lines.append("}")
    return "\n".join(lines)
