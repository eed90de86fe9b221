"""Instar: a durable job engine with an explicit, enforced lifecycle."""

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
)
from instar.lifecycle import State
from instar.models import Awakeable, Event, Job, Progress, QueueStats
from instar.registry import JobDefinition
from instar.retry import Retry
from instar.vocabulary import Actor, AwakeableState, DependencyKind, Trigger

__all__ = [
    "Actor",
    "App",
    "Awakeable",
    "AwakeableNotFound",
    "AwakeableState",
    "ChildFailed",
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
    "PayloadError",
    "Progress",
    "QueueStats",
    "Retry",
    "SignalAlreadySettled",
    "SignalRejected",
    "SignalTimeout",
    "State",
    "StoreRefused",
    "TransactionConflict",
    "Trigger",
    "UnknownJob",
]
