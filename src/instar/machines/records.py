"""What the durable machines' API returns: instances, send results, history
entries, refusals, verifications, and what listeners are told."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from instar.store.contract import HistoryRow, InstanceRow, RefusalRow


def _when(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


@dataclass(frozen=True)
class Instance:
    """One instance: ``state`` is its active leaf path (``"fulfilment.packing"``),
    ``seq`` the number of its last history entry, ``final`` whether it ended."""

    machine: str
    key: str
    version: int
    state: str
    context: dict[str, Any]
    seq: int
    final: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: InstanceRow) -> Instance:
        return cls(
            machine=row.machine,
            key=row.key,
            version=row.version,
            state=row.state,
            context=json.loads(row.context_json),
            seq=row.seq,
            final=row.final,
            created_at=_when(row.created_at),
            updated_at=_when(row.updated_at),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "key": self.key,
            "version": self.version,
            "state": self.state,
            "context": self.context,
            "seq": self.seq,
            "final": self.final,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True)
class SendResult:
    """``accepted``; the instance's ``state`` and ``seq`` after the send (as it
    was, when refused); ``reason`` (one of ``interpret.REASONS``, or
    ``action_error``) and ``detail`` in words when refused."""

    accepted: bool
    state: str
    seq: int
    reason: str | None = None
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "state": self.state,
            "seq": self.seq,
            "reason": self.reason,
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SendResult:
        return cls(data["accepted"], data["state"], data["seq"], data["reason"], data["detail"])


@dataclass(frozen=True)
class HistoryEntry:
    """One entry, oldest first in a history. ``kind``: created, event, timer,
    rolled_back or migrated; ``transition``: the index of the transition taken."""

    seq: int
    at: datetime
    kind: str
    event: str | None
    from_state: str | None
    to_state: str
    data: dict[str, Any] | None
    context: dict[str, Any]
    actor: str | None
    transition: int | None
    version: int
    detail: dict[str, Any] | None

    @classmethod
    def of(cls, row: HistoryRow) -> HistoryEntry:
        return cls(
            seq=row.seq,
            at=_when(row.at),
            kind=row.kind,
            event=row.event,
            from_state=row.from_state,
            to_state=row.to_state,
            data=None if row.data_json is None else json.loads(row.data_json),
            context=json.loads(row.context_json),
            actor=row.actor,
            transition=row.transition,
            version=row.version,
            detail=None if row.detail_json is None else json.loads(row.detail_json),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at.isoformat(),
            "kind": self.kind,
            "event": self.event,
            "from_state": self.from_state,
            "to_state": self.to_state,
            "data": self.data,
            "context": self.context,
            "actor": self.actor,
            "transition": self.transition,
            "version": self.version,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Refusal:
    at: datetime
    event: str
    state: str | None
    reason: str
    detail: str | None
    actor: str | None

    @classmethod
    def of(cls, row: RefusalRow) -> Refusal:
        return cls(_when(row.at), row.event, row.state, row.reason, row.detail, row.actor)


@dataclass(frozen=True)
class Verification:
    """``ok`` when replaying the history reproduces the instance; else
    ``problems``, each naming the entry (seq) where replay and record differ."""

    machine: str
    key: str
    ok: bool
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Happening:
    """What a listener is told, after commit: ``kind`` is enter, exit,
    transition or refusal; ``state`` the state entered or exited (enter, exit);
    ``context`` a copy of the instance's context after the change."""

    kind: str
    machine: str
    key: str
    seq: int
    event: str | None
    from_state: str | None
    to_state: str | None
    state: str | None
    context: dict[str, Any]
    reason: str | None = None
