"""The generic transition table: any machine's table passes the same checks and
the same renderers as the jobs' lifecycle."""

from __future__ import annotations

import pytest

from instar.diagram import render
from instar.table import InvalidTable, TransitionTable

ORDER = TransitionTable(
    name="order",
    states=("placed", "paid", "shipped", "delivered", "refunded"),
    transitions={
        "placed": frozenset({"paid", "refunded"}),
        "paid": frozenset({"shipped", "refunded"}),
        "shipped": frozenset({"delivered"}),
        "delivered": frozenset(),
        "refunded": frozenset(),
    },
    entry=frozenset({"placed"}),
    final=frozenset({"delivered", "refunded"}),
)


def test_a_well_formed_machine_passes() -> None:
    assert ORDER.problems() == []
    ORDER.validate()
    assert ORDER.targets("placed") == ["paid", "refunded"]
    assert ORDER.sources("refunded") == {"placed", "paid"}


def test_every_problem_is_named_at_once() -> None:
    broken = TransitionTable(
        name="broken",
        states=("a", "b", "c", "d"),
        transitions={"a": frozenset({"b", "z"}), "b": frozenset({"b"}), "c": frozenset()},
        entry=frozenset({"a"}),
        final=frozenset({"c"}),
        initial_only=frozenset({"b"}),
    )
    with pytest.raises(InvalidTable) as refused:
        broken.validate()
    problems = refused.value.problems
    assert "states without a row: d" in problems
    assert "a moves to unknown states: z" in problems
    assert any(p.startswith("unreachable states: c, d") for p in problems)
    assert "state b has no path to a final state" in problems
    assert any(p.startswith("the initial state b must not be entered again") for p in problems)


def test_the_renderers_draw_any_machine() -> None:
    mermaid = render("mermaid", ORDER)
    assert "[*] --> placed" in mermaid and "paid --> shipped" in mermaid
    assert "delivered --> [*]" in mermaid
    assert '"placed" -> "refunded";' in render("dot", ORDER)
    assert render("table", ORDER).splitlines()[1].startswith("placed")
