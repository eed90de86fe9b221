"""Drawings of the lifecycle table: a text table, Mermaid and Graphviz DOT.

One model (the table in ``instar.lifecycle``), several renderers; the README's
lifecycle section is the Mermaid output, checked for drift by a test.
"""

from __future__ import annotations

from typing import Literal, assert_never

from instar.lifecycle import ENTRY_STATES, KINDS, MEANINGS, TRANSITIONS, State, is_terminal

Format = Literal["table", "mermaid", "dot"]


def _ordered_targets(state: State) -> list[State]:
    return [s for s in State if s in TRANSITIONS[state]]


def render(fmt: Format) -> str:
    match fmt:
        case "table":
            return _table()
        case "mermaid":
            return _mermaid()
        case "dot":
            return _dot()
        case _:
            assert_never(fmt)


def _table() -> str:
    rows = [("state", "kind", "may move to", "meaning")]
    for state in State:
        targets = ", ".join(s.value for s in _ordered_targets(state)) or "-"
        rows.append((state.value, KINDS[state].value, targets, MEANINGS[state]))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + "  "
        + row[3]
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def _node(state: State) -> str:
    return state.value.replace("-", "_")


def _mermaid() -> str:
    lines = ["stateDiagram-v2"]
    lines += [f"    [*] --> {_node(s)}" for s in State if s in ENTRY_STATES]
    for state in State:
        for target in _ordered_targets(state):
            lines.append(f"    {_node(state)} --> {_node(target)}")
        if is_terminal(state):
            lines.append(f"    {_node(state)} --> [*]")
    return "\n".join(lines)


def _dot() -> str:
    lines = ["digraph lifecycle {", "    rankdir=LR;"]
    for state in State:
        shape = "doublecircle" if is_terminal(state) else "ellipse"
        lines.append(f'    "{state.value}" [shape={shape}, tooltip="{KINDS[state].value}"];')
    for state in State:
        for target in _ordered_targets(state):
            lines.append(f'    "{state.value}" -> "{target.value}";')
    lines.append("}")
    return "\n".join(lines)
