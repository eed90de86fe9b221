"""Pictures drawn on the server as SVG: the job lifecycle, laid out from the
one transition table (``instar.lifecycle.JOBS``), and per-minute bar charts.

The layout is a layered drawing (Sugiyama's first step): a state's column is
its distance from the initial state in moves, final states in a column of
their own at the right. Every edge is a quadratic curve bowed to one side, so
that the two directions between a pair of states never overlap. Element ids
(``node-<state>``, ``count-<state>``, ``edge-<from>-<to>``) are what the page's
script updates and flashes as events arrive.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from instar.lifecycle import INITIAL, JOBS, State

NODE_W, NODE_H = 124, 46
COL_GAP, ROW_GAP = 178, 74
MARGIN = 14
BOW = 0.18
"""How far an edge's curve bows out, as a share of its length."""


@dataclass(frozen=True, slots=True)
class Box:
    x: float
    y: float

    @property
    def centre(self) -> tuple[float, float]:
        return self.x + NODE_W / 2, self.y + NODE_H / 2


def layout() -> dict[State, Box]:
    """Where each state's box goes: columns by distance from the initial state."""
    depth: dict[State, int] = {INITIAL: 0}
    todo = deque([INITIAL])
    while todo:
        state = todo.popleft()
        for target in JOBS.targets(state):
            if target not in depth:
                depth[target] = depth[state] + 1
                todo.append(target)
    last = max(d for s, d in depth.items() if s not in JOBS.final) + 1
    columns: dict[int, list[State]] = {}
    for state in State:  # the table's order within a column
        column = last if state in JOBS.final else depth.get(state, last)
        columns.setdefault(column, []).append(state)
    tallest = max(len(states) for states in columns.values())
    boxes: dict[State, Box] = {}
    for column, states in columns.items():
        top = (tallest - len(states)) * ROW_GAP / 2
        for row, state in enumerate(states):
            boxes[state] = Box(MARGIN + column * COL_GAP, MARGIN + top + row * ROW_GAP)
    return boxes


def _edge_end(box: Box, towards: tuple[float, float]) -> tuple[float, float]:
    """Where the line from the box's centre towards a point leaves the box."""
    cx, cy = box.centre
    dx, dy = towards[0] - cx, towards[1] - cy
    if dx == 0 and dy == 0:
        return cx, cy
    scale = min(
        (NODE_W / 2) / abs(dx) if dx else math.inf,
        (NODE_H / 2) / abs(dy) if dy else math.inf,
    )
    return cx + dx * scale, cy + dy * scale


def _curve(a: Box, b: Box) -> str:
    (ax, ay), (bx, by) = a.centre, b.centre
    mx, my = (ax + bx) / 2, (ay + by) / 2
    # Bow to the left of the direction of travel: a -> b and b -> a part ways.
    control = (mx - (by - ay) * BOW, my + (bx - ax) * BOW)
    sx, sy = _edge_end(a, control)
    ex, ey = _edge_end(b, control)
    return f"M{sx:.1f},{sy:.1f} Q{control[0]:.1f},{control[1]:.1f} {ex:.1f},{ey:.1f}"


def lifecycle(counts: Mapping[State, int], link: str = "/jobs?state=") -> Markup:
    """The lifecycle as an SVG element: a box per state with its count (a link
    to the jobs in it), an arrow per move the table allows."""
    boxes = layout()
    width = max(b.x for b in boxes.values()) + NODE_W + MARGIN
    height = max(b.y for b in boxes.values()) + NODE_H + MARGIN
    parts = [
        f'<svg class="lifecycle" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        'aria-labelledby="lifecycle-title" xmlns="http://www.w3.org/2000/svg">',
        '<title id="lifecycle-title">The job lifecycle: each state with the jobs in it '
        "now, each move the lifecycle table allows</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'class="arrowhead"/></marker></defs>',
    ]
    for source in State:
        for target in JOBS.targets(source):
            parts.append(
                f'<path id="edge-{source.value}-{target.value}" class="edge" '
                f'd="{_curve(boxes[source], boxes[target])}" marker-end="url(#arrow)">'
                f"<title>{source.value} → {target.value}</title></path>"
            )
    for state, box in boxes.items():
        kind = JOBS.kinds.get(state, "")
        cx = box.x + NODE_W / 2
        parts.append(
            f'<a href="{escape(link)}{state.value}" id="node-{state.value}" '
            f'class="node kind-{kind}" aria-label="{state.value}: jobs in this state">'
            f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{NODE_W}" height="{NODE_H}" rx="8"/>'
            f'<text x="{cx:.1f}" y="{box.y + 19:.1f}" class="state-name">{state.value}</text>'
            f'<text x="{cx:.1f}" y="{box.y + 37:.1f}" class="count" id="count-{state.value}">'
            f"{counts.get(state, 0):,}</text></a>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def bars(series: Sequence[tuple[str, Sequence[int]]], label: str) -> Markup:
    """Per-minute bars of one or more series side by side (oldest first), each
    series a CSS class; the tallest bar fills the height."""
    width, height, gap = 600, 90, 1
    count = max((len(values) for _, values in series), default=0)
    top = max((v for _, values in series for v in values), default=0) or 1
    slot = width / max(count, 1)
    bar = max((slot - gap) / max(len(series), 1), 0.5)
    parts = [
        f'<svg class="bars" viewBox="0 0 {width} {height}" preserveAspectRatio="none" role="img" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for index, (name, values) in enumerate(series):
        for minute, value in enumerate(values):
            if value:
                h = max(value / top * (height - 2), 1)
                x = minute * slot + index * bar
                parts.append(
                    f'<rect class="{escape(name)}" x="{x:.1f}" y="{height - h:.1f}" '
                    f'width="{bar:.1f}" height="{h:.1f}"><title>{value:,}</title></rect>'
                )
    parts.append(f'<line class="axis" x1="0" y1="{height}" x2="{width}" y2="{height}"/></svg>')
    return Markup("".join(parts))
