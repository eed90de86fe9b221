"""The lifecycle table: its invariants, and every pair of states both ways through the engine."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

import instar
from instar.engine import plan_move
from instar.lifecycle import (
    ENTRY_STATES,
    INITIAL,
    JOBS,
    KINDS,
    TRANSITIONS,
    Kind,
    State,
    can_transition,
    validate,
)
from instar.vocabulary import Trigger
from tests.factory import job_in


def test_the_initial_state_is_never_entered_again() -> None:
    assert all(INITIAL not in targets for targets in TRANSITIONS.values())


def test_completed_and_cancelled_absorb() -> None:
    assert TRANSITIONS[State.COMPLETED] == frozenset()
    assert TRANSITIONS[State.CANCELLED] == frozenset()


def test_failed_leaves_only_by_an_operator_retry_to_ready() -> None:
    assert TRANSITIONS[State.FAILED] == {State.READY}


def test_every_state_has_a_kind_and_terminal_kinds_are_the_three_ends() -> None:
    assert set(KINDS) == set(State)
    terminal = {s for s, k in KINDS.items() if k is Kind.TERMINAL}
    assert terminal == {State.COMPLETED, State.FAILED, State.CANCELLED}


def test_jobs_start_only_in_pending_scheduled_or_ready() -> None:
    assert {State.PENDING, State.SCHEDULED, State.READY} == ENTRY_STATES


def test_validator_refuses_an_unreachable_state() -> None:
    broken = dict(TRANSITIONS)
    broken[State.RUNNING] = TRANSITIONS[State.RUNNING] - {State.SERVING}
    with pytest.raises(ValueError, match="unreachable"):
        validate(replace(JOBS, transitions=broken))


def test_validator_refuses_a_state_with_no_way_to_an_end() -> None:
    broken = dict(TRANSITIONS)
    broken[State.SUSPENDED] = frozenset({State.READY})
    broken[State.READY] = frozenset({State.SUSPENDED})
    broken[State.SCHEDULED] = frozenset({State.READY})
    broken[State.PENDING] = frozenset({State.READY, State.SCHEDULED})
    broken[State.PAUSED] = frozenset({State.READY})
    with pytest.raises(ValueError):
        validate(replace(JOBS, transitions=broken))


def test_validator_refuses_reentering_the_initial_state() -> None:
    broken = dict(TRANSITIONS)
    broken[State.READY] = TRANSITIONS[State.READY] | {State.PENDING}
    with pytest.raises(ValueError, match="initial"):
        validate(replace(JOBS, transitions=broken))


PAIRS = list(itertools.product(State, State))


@pytest.mark.parametrize(("from_state", "to_state"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_every_pair_of_states_is_allowed_or_refused_as_the_table_says(
    app: instar.App, from_state: State, to_state: State
) -> None:
    job = job_in(app, from_state)
    before = app.history(job.id)
    if can_transition(from_state, to_state):
        move = plan_move(job, to_state, Trigger.RESUMED)
        assert app.engine.apply([move]) == [True]
        after = app.history(job.id)
        assert len(after) == len(before) + 1
        assert (after[-1].from_state, after[-1].to_state) == (from_state, to_state)
        assert app.get(job.id).state is to_state
    else:
        with pytest.raises(instar.InvalidTransition) as refused:
            plan_move(job, to_state, Trigger.RESUMED)
        assert (refused.value.job_id, refused.value.from_state, refused.value.to_state) == (
            job.id,
            from_state.value,
            to_state.value,
        )
        assert app.get(job.id) == job
        assert app.history(job.id) == before
