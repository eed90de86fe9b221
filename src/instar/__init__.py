"""Instar: a durable job engine with an explicit, enforced lifecycle."""

from instar.app import App
from instar.context import Context
from instar.errors import (
    ConfigurationError,
    Fatal,
    InstarError,
    InvalidOption,
    InvalidTransition,
    JobNotFound,
    PayloadError,
    UnknownJob,
)
from instar.jobs import JobDefinition
from instar.lifecycle import State
from instar.models import Event, Job, Progress
from instar.retry import Retry

__all__ = [
    "App",
    "ConfigurationError",
    "Context",
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
    "Retry",
    "State",
    "UnknownJob",
]
