"""The SQL names states through placeholders filled, and checked, from the lifecycle."""

from __future__ import annotations

import pytest

from instar.lifecycle import CLAIM, State
from instar.store.postgres.store import Q as POSTGRES_QUERIES
from instar.store.sql_blocks import fill, load_blocks
from instar.store.sqlite.store import Q as SQLITE_QUERIES
from instar.vocabulary import AwakeableState, DependencyKind


def test_the_claim_takes_both_of_its_states_from_the_lifecycle() -> None:
    for claim in (SQLITE_QUERIES["claim_any_queue"], POSTGRES_QUERIES["claim"]):
        assert f"state = '{CLAIM[0].value}'" in claim
        assert f"SET state = '{CLAIM[1].value}'" in claim


def test_kinds_expand_to_every_state_of_that_kind() -> None:
    assert fill("q", "state IN ({leased})") == "state IN ('running', 'serving', 'stopping')"


def test_names_are_checked_against_their_enums() -> None:
    assert fill("q", "{state:backing-off} {awakeable:timed-out} {dependency:join}") == (
        "'backing-off' 'timed-out' 'join'"
    )
    with pytest.raises(ValueError, match="'sleeping' is not a state"):
        fill("q", "state = {state:sleeping}")
    with pytest.raises(ValueError, match="unknown placeholder"):
        fill("q", "state = {sleeping}")


@pytest.mark.parametrize("package", ["instar.store.sqlite", "instar.store.postgres"])
def test_no_query_types_a_state_or_a_vocabulary_name_by_hand(package: str) -> None:
    names = [*State, *AwakeableState, *DependencyKind]
    for block, sql in load_blocks(package, "queries.sql").items():
        typed = [name.value for name in names if f"'{name.value}'" in sql]
        assert typed == [], f"{package} {block} types {typed}; use a placeholder"
