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


def render(
    fmt: Format, table: TransitionTable[Any] | None = None, *, current: Hashable | None = None
) -> str:
    """``table`` (the job lifecycle when None) drawn in ``fmt``; ``current``: a
    state to highlight (where one instance is). Nested states (a table with
    ``parents``) are drawn as composite states (Mermaid) or clusters (DOT);
    moves carry their ``labels``."""
    drawn = table if table is not None else JOBS
    match fmt:
        case "table":
            return _table(drawn)
        case "mermaid":
            return _mermaid(drawn, current)
        case "dot":
            return _dot(drawn, current)
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


def _label(table: TransitionTable[Any], state: Hashable, target: Hashable) -> str:
    label = table.labels.get((state, target))
    return f" : {label}" if label else ""


def _short(state: Hashable) -> str:
    return str(state).rsplit(".", 1)[-1]


def _mermaid(table: TransitionTable[Any], current: Hashable | None) -> str:
    lines = ["stateDiagram-v2"]
    lines += [f"    [*] --> {_node(s)}" for s in table.states if s in table.entry]
    children: dict[Hashable, list[Hashable]] = {}
    for state in table.states:
        children.setdefault(table.parents.get(state), []).append(state)

    def declare(state: Hashable, indent: str) -> None:
        if "." in str(state):
            lines.append(f'{indent}state "{_short(state)}" as {_node(state)}')
        if state in table.initial_children:
            lines.append(f"{indent}state {_node(state)} {{")
            lines.append(f"{indent}    [*] --> {_node(table.initial_children[state])}")
            for child in children.get(state, []):
                declare(child, indent + "    ")
            lines.append(f"{indent}}}")

    if table.parents:
        for state in children.get(None, []):
            declare(state, "    ")
    for state in table.states:
        for target in table.targets(state):
            lines.append(f"    {_node(state)} --> {_node(target)}{_label(table, state, target)}")
        if state in table.final:
            lines.append(f"    {_node(state)} --> [*]")
    if current is not None:
        lines.append("    classDef current fill:#fde68a,stroke:#b45309,stroke-width:2px")
        lines.append(f"    class {_node(current)} current")
    return "\n".join(lines)


def _dot(table: TransitionTable[Any], current: Hashable | None) -> str:
    name = _node(table.name).replace(" ", "_")
    lines = [f"digraph {name} {{", "    rankdir=LR;"]
    children: dict[Hashable, list[Hashable]] = {}
    for state in table.states:
        children.setdefault(table.parents.get(state), []).append(state)

    def node(state: Hashable, indent: str) -> None:
        if state in table.initial_children:
            lines.append(f'{indent}subgraph "cluster_{state}" {{')
            lines.append(f'{indent}    label="{_short(state)}";')
            lines.append(f'{indent}    "{state}" [shape=point, label=""];')
            for child in children.get(state, []):
                node(child, indent + "    ")
            lines.append(f"{indent}}}")
            return
        shape = "doublecircle" if state in table.final else "ellipse"
        kind = table.kinds.get(state, "")
        extra = ', style=filled, fillcolor="#fde68a"' if state == current else ""
        label = f', label="{_short(state)}"' if "." in str(state) else ""
        lines.append(f'{indent}"{state}" [shape={shape}, tooltip="{kind}"{label}{extra}];')

    for state in children.get(None, []):
        node(state, "    ")
    for state in table.states:
        for target in table.targets(state):
            label = table.labels.get((state, target))
            shown = f' [label="{label}"]' if label else ""
            lines.append(f'    "{state}" -> "{target}"{shown};')
    lines.append("}")
    return "\n".join(lines)
