"""Instar: a durable job engine with an explicit, enforced lifecycle."""

from typing import TYPE_CHECKING

from instar.app import App
from instar.context import Context
from instar.errors import (
    AwakeableNotFound,
    ChildFailed,
    ConfigurationError,
    DatabaseCorrupt,
    DatabaseTimeout,
    DatabaseUnavailable,
    Fatal,
    InstarError,
    InvalidOption,
    InvalidTransition,
    JobNotFound,
    PayloadError,
    SignalAlreadySettled,
    SignalRejected,
    SignalTimeout,
    StoreRefused,
    TransactionConflict,
    UnknownJob,
    VersionMismatch,
)
from instar.lifecycle import State
from instar.models import Awakeable, Event, Job, Progress, QueueStats
from instar.registry import JobDefinition
from instar.registry.flow import Limit, Rate
from instar.retention import Retention
from instar.retry import Retry
from instar.vocabulary import Actor, AwakeableState, DependencyKind, Trigger

if TYPE_CHECKING:
    from instar.client import AsyncClient, Client

__all__ = [
    "Actor",
    "App",
    "AsyncClient",
    "Awakeable",
    "AwakeableNotFound",
    "AwakeableState",
    "ChildFailed",
    "Client",
    "ConfigurationError",
    "Context",
    "DatabaseCorrupt",
    "DatabaseTimeout",
    "DatabaseUnavailable",
    "DependencyKind",
    "Event",
    "Fatal",
    "InstarError",
    "InvalidOption",
    "InvalidTransition",
    "Job",
    "JobDefinition",
    "JobNotFound",
    "Limit",
    "PayloadError",
    "Progress",
    "QueueStats",
    "Rate",
    "Retention",
    "Retry",
    "SignalAlreadySettled",
    "SignalRejected",
    "SignalTimeout",
    "State",
    "StoreRefused",
    "TransactionConflict",
    "Trigger",
    "UnknownJob",
    "VersionMismatch",
]


def __getattr__(name: str) -> object:
    # The HTTP client needs httpx (the client extra): imported only when used.
    if name in ("Client", "AsyncClient"):
        from instar import client

        return getattr(client, name)
    raise AttributeError(f"module 'instar' has no attribute {name!r}")
