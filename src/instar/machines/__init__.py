"""User-defined durable state machines: definitions in Python or TOML,
instances kept in the job store with their full history, timers, actions,
rollback and verification. See ``instar.machines.api`` for the calls."""

from instar.errors import (
    Conflict,
    DefinitionConflict,
    InstanceExists,
    InstanceNotFound,
    InvalidMachine,
    MachineNotFound,
)
from instar.machines.api import Machines
from instar.machines.builder import Machine, context, enqueue, event, send
from instar.machines.definition import Definition
from instar.machines.records import (
    Happening,
    HistoryEntry,
    Instance,
    Refusal,
    SendResult,
    Verification,
)
from instar.machines.runtime import MachineRuntime

__all__ = [
    "Conflict",
    "Definition",
    "DefinitionConflict",
    "Happening",
    "HistoryEntry",
    "Instance",
    "InstanceExists",
    "InstanceNotFound",
    "InvalidMachine",
    "Machine",
    "MachineNotFound",
    "MachineRuntime",
    "Machines",
    "Refusal",
    "SendResult",
    "Verification",
    "context",
    "enqueue",
    "event",
    "send",
]
