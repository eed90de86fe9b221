"""Machine definitions are checked when registered: every problem at once, each
with its file and line (TOML) or state path; hostile text is refused with a
clear message and never evaluated."""

from __future__ import annotations

from pathlib import Path

import pytest

from instar.machines import InvalidMachine, Machine, context, event
from instar.machines.definition import compile_definition
from instar.machines.toml_format import read_file, read_text

GOOD = """
[machine]
name = "door"
version = 1
initial = "closed"

[states.closed]
[states.open]
after = [{ delay = "30s", event = "auto_close" }]
[states.gone]
final = true

[[transitions]]
from = "closed"
on = "open"
to = "open"

[[transitions]]
from = "open"
on = "auto_close"
to = "closed"

[[transitions]]
from = ["open", "closed"]
on = "remove"
to = "gone"
"""


def problems_of(text: str, guards: set[str] | None = None) -> list[str]:
    raw, locate = read_text(text, "door.toml")
    with pytest.raises(InvalidMachine) as caught:
        compile_definition(raw, locate=locate, guards=guards)
    return caught.value.problems


def test_a_good_definition_compiles_with_its_timers_and_transitions_in_order() -> None:
    raw, locate = read_text(GOOD, "door.toml")
    definition = compile_definition(raw, locate=locate)
    assert definition.initial == "closed"
    assert definition.states["open"].after[0].delay_ms == 30_000
    assert [t.event for t in definition.transitions] == ["open", "auto_close", "remove"]
    assert definition.warnings == ()


def test_every_problem_is_listed_at_once_with_its_line() -> None:
    text = """
[machine]
name = "bad"
version = 1
initial = "start"

[states.start]
after = [{ delay = "soon", event = "tick" }]

[states.group]

[states.done]
final = true
after = [{ delay = "1m", event = "again" }]

[[transitions]]
from = "start"
on = "go"
to = "nowhere"

[[transitions]]
from = "done"
on = "back"
to = "start"
"""
    problems = problems_of(text)
    joined = "\n".join(problems)
    assert "door.toml:7: states.start: delay 'soon' is not a duration" in joined
    assert "door.toml:12: states.done: a final state cannot have after timers" in joined
    assert "door.toml:16: transitions.0: to 'nowhere' is not a state" in joined
    assert "door.toml:21: transitions.1: transition out of the final state done" in joined
    assert len(problems) >= 4


def test_unreachable_states_are_refused_and_states_with_no_way_out_are_a_warning() -> None:
    text = """
[machine]
name = "m"
version = 1
initial = "a"
[states.a]
[states.b]
[states.loop]
[states.end]
final = true
[[transitions]]
from = "a"
on = "go"
to = "end"
[[transitions]]
from = "a"
on = "spin"
to = "loop"
"""
    assert any("unreachable state b" in p for p in problems_of(text))
    raw, _ = read_text(text.replace("[states.b]\n", ""))
    definition = compile_definition(raw)
    assert any("loop" in w and "no path to a final state" in w for w in definition.warnings)


def test_a_superstate_move_does_not_leave_a_final_child_in_the_reachability_checks() -> None:
    """An instance in a final state takes no event: a move its superstate
    declares reaches nothing from there (the runtime refuses it as final_state)."""
    text = """
[machine]
name = "m"
version = 1
initial = "job"
[states.job]
initial = "done"
[states.job.states.done]
final = true
[states.after]
final = true
[[transitions]]
from = "job"
on = "next"
to = "after"
"""
    assert any("unreachable state after" in p for p in problems_of(text))


def test_initial_states_compound_states_and_durations_are_checked() -> None:
    two_initials = GOOD.replace("[states.closed]", "[states.closed]\ninitial = true").replace(
        'initial = "closed"', 'initial = "open"'
    )
    assert any("two initial states" in p for p in problems_of(two_initials))
    no_initial = GOOD.replace('initial = "closed"\n', "")
    assert any("no initial state" in p for p in problems_of(no_initial))
    compound = GOOD + "\n[states.closed.states.locked]\n[states.closed.states.unlocked]\n"
    assert any("compound state needs an initial child" in p for p in problems_of(compound))
    wrong_child = compound.replace("[states.closed]", '[states.closed]\ninitial = "ajar"')
    assert any("'ajar' is not a child of closed" in p for p in problems_of(wrong_child))
    for delay in ("10", "1.5s", "-1s", "1w", "9999999999999d"):
        bad = GOOD.replace('delay = "30s"', f'delay = "{delay}"')
        assert any("is not a duration" in p for p in problems_of(bad)), delay


def test_hostile_names_are_refused_with_the_rule_they_break() -> None:
    for name in ("a.b", 'qu"ote', "\u043e\u0440\u0435n", "with space", "", "x" * 65, "1st"):
        text = GOOD.replace("[states.gone]", f"[states.'{name}']\n[states.gone]")
        problems = problems_of(text)
        assert any(
            f"state name {name!r:.20}" in p and "must be 1 to 64 ASCII letters" in p
            for p in problems
        )
    lookalike = GOOD.replace("closed", "c\u0430osed", 1)  # a Cyrillic letter in the initial
    assert any("is not a state" in p for p in problems_of(lookalike))


def test_a_guard_is_a_name_and_never_code() -> None:
    text = GOOD.replace(
        'to = "open"\n', "to = \"open\"\nguard = \"__import__('os').system('x')\"\n"
    )
    assert any("is not a name: a guard is a Python function" in p for p in problems_of(text))
    named = GOOD.replace('to = "open"\n', 'to = "open"\nguard = "carrier_available"\n')
    problems = problems_of(named, guards=set())
    assert any("guard 'carrier_available' is not registered" in p for p in problems)
    raw, _ = read_text(named)
    compile_definition(raw, guards={"carrier_available"})


def test_deep_nesting_and_huge_machines_are_refused_without_crashing() -> None:
    deep = "[machine]\nname='deep'\nversion=1\ninitial='s'\n"
    path = "states.s"
    for _ in range(200):
        deep += f"[{path}]\ninitial='s'\n"
        path += ".states.s"
    assert any("nest 16 deep at most" in p for p in problems_of(deep))
    many = "[machine]\nname='many'\nversion=1\ninitial='s0'\n" + "".join(
        f"[states.s{i}]\n" for i in range(10_000)
    )
    assert any("at most 1,000 states" in p for p in problems_of(many))


def test_cycles_of_names_are_refused() -> None:
    text = GOOD + "\n[states.open.states.open]\n[states.open.states.closed]\n"
    text = text.replace("[states.open]", '[states.open]\ninitial = "open.open.open"')
    # initial names a path that is not a direct child of "open"
    problems = problems_of(text)
    assert any("is not a child of open" in p for p in problems)
    self_initial = GOOD.replace("[states.closed]", '[states.closed]\ninitial = "closed"')
    assert any("has no child states" in p for p in problems_of(self_initial))


def test_a_file_that_is_not_utf8_or_not_toml_is_named_in_the_error(tmp_path: Path) -> None:
    binary = tmp_path / "bad.toml"
    binary.write_bytes(b'[machine]\nname = "\xff"\n')
    with pytest.raises(InvalidMachine, match=r"bad.toml: not UTF-8 \(byte 0xff"):
        read_file(binary)
    broken = tmp_path / "broken.toml"
    broken.write_text("[machine\nname = 1\n")
    with pytest.raises(InvalidMachine, match=r"broken.toml: not valid TOML.*line 1"):
        read_file(broken)
    with pytest.raises(InvalidMachine, match="cannot read the file"):
        read_file(tmp_path / "missing.toml")


def test_the_builder_writes_the_same_form_as_toml() -> None:
    door = Machine("door", version=1, initial="closed")
    door.state("closed").state("open", after=[("30s", "auto_close")]).state("gone", final=True)
    door.transition("closed", "open", "open")
    door.transition("open", "auto_close", "closed")
    door.transition(["open", "closed"], "remove", "gone")
    built = compile_definition(door.raw())
    raw, _ = read_text(GOOD)
    from_toml = compile_definition(raw)
    assert built.states == from_toml.states
    assert built.transitions == from_toml.transitions


def test_builder_conditions_and_duplicates() -> None:
    order = Machine("order", version=1, initial="placed", context={"total": 0})
    order.event("pay", amount="number")
    order.state("placed").state("paid", final=True).state("placed")
    order.transition(
        "placed", "pay", "paid", when=event("amount").ge(context("total")), guard=lambda c, d: True
    )
    assert "state placed: added twice (duplicate name)" in order.problems
    assert any("a guard must be a named function" in p for p in order.problems)
    when = compile_definition(order.raw()).transitions[0].when[0]
    assert (when.left.path, when.op, when.right.path) == (("amount",), "ge", ("total",))
