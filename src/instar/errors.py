"""Every error Instar raises, rooted at one class.

    InstarError
    ├── InvalidTransition      the lifecycle table refuses a move
    ├── JobNotFound            no job has this id
    ├── UnknownJob             no handler is registered under this name
    ├── PayloadError           arguments or results that are not JSON, or too large
    ├── ConfigurationError     a bad database URL, option or app reference
    │   ├── DatabaseUnavailable    the database server cannot be reached (yet), or is busy
    │   └── DatabaseCorrupt        the database file is damaged
    ├── StoreRefused           the database refused the data of one write
    ├── TransactionConflict    a serialization failure or deadlock: retry the transaction
    ├── DatabaseTimeout        a lock_timeout or statement_timeout fired
    ├── InvalidOption          an enqueue option that makes no sense (naive run_at ...)
    ├── AwakeableNotFound      no awakeable has this id
    ├── SignalAlreadySettled   the awakeable was resolved, rejected or timed out already
    ├── SignalRejected         raised in a handler: the signal it awaited was rejected
    ├── SignalTimeout          raised in a handler: the signal did not come in time
    ├── ChildFailed            raised in a handler: a joined child failed or was cancelled
    ├── Fatal                  raised by a handler: fail now, no retry
    ├── InvalidMachine         a durable machine's definition breaks a rule (all listed)
    ├── MachineNotFound        no machine (version) is registered under this name
    ├── InstanceNotFound       the machine has no instance with this key
    ├── InstanceExists         the machine has an instance with this key already
    ├── Conflict               a send's expect_seq: the instance moved on
    └── DefinitionConflict     a registered (name, version) holds another text

Each error names the offending value and the way out. Each class also carries
how the shells report it, in one place: ``exit_code`` (the CLI's exit status),
``http_status`` (the HTTP API's status) and ``code`` (a stable name a client
can switch on); and ``retriable``: whether a handler that raises it (or lets
it through) may succeed by running again. The retry policy reads that flag, so
whether an error is worth a retry is decided where the error is defined. A
subclass inherits them unless it says otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar


class InstarError(Exception):
    """The root of every error Instar raises on purpose."""

    exit_code: ClassVar[int] = 1
    http_status: ClassVar[int] = 500
    code: ClassVar[str] = "error"
    retriable: ClassVar[bool] = True


class InvalidTransition(InstarError):
    exit_code = 3
    http_status = 409
    code = "invalid_transition"
    retriable = False

    def __init__(
        self,
        job_id: int,
        from_state: str,
        to_state: str,
        reason: str = "",
        *,
        message: str | None = None,
        allowed_from: tuple[str, ...] = (),
    ) -> None:
        self.job_id = job_id
        self.from_state = from_state
        self.to_state = to_state
        self.allowed_from = allowed_from  # the states the verb applies to, when a verb
        why = f": {reason}" if reason else ""
        super().__init__(
            message
            or f"job {job_id} cannot move from {from_state!r} to {to_state!r}{why}; "
            "see `instar lifecycle` for the allowed moves"
        )


class VersionMismatch(InstarError):
    """A verb was asked on a job as it stood at one version, and it has changed since."""

    exit_code = 3
    http_status = 412
    code = "version_mismatch"
    retriable = False

    def __init__(self, job_id: int, expected: int, found: int) -> None:
        self.job_id = job_id
        self.expected = expected
        self.found = found
        super().__init__(
            f"job {job_id} is at version {found}, not {expected}: it changed since it was "
            "read; read it again and decide again"
        )


class JobNotFound(InstarError):
    exit_code = 4
    http_status = 404
    code = "job_not_found"

    def __init__(self, job_id: object) -> None:
        self.job_id = job_id
        super().__init__(f"no job with id {job_id!r}; list jobs with `instar jobs`")


class UnknownJob(InstarError):
    exit_code = 5
    http_status = 422
    code = "unknown_job_name"
    retriable = False

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        names = ", ".join(sorted(known)) or "none"
        super().__init__(
            f"no job named {name!r} is registered (known: {names}); "
            "register it with @app.job or pass the right --app"
        )


class PayloadError(InstarError):
    """A payload that is not JSON-serialisable or exceeds the size limit."""

    exit_code = 6
    http_status = 422
    code = "invalid_payload"
    retriable = False


class ConfigurationError(InstarError):
    """A database URL, option or app reference that cannot be used."""

    exit_code = 7
    http_status = 500
    code = "configuration_error"


class DatabaseUnavailable(ConfigurationError):
    """The server did not answer or refused us: a worker waits and tries again."""

    exit_code = 7
    http_status = 503
    code = "unavailable"


class DatabaseCorrupt(ConfigurationError):
    """The database file is damaged (SQLite: malformed, or not a database at all)."""

    code = "database_corrupt"
    retriable = False


class StoreRefused(InstarError):
    """The database refused the data of one write (text it cannot store, a number out
    of range): the write is at fault, not the database. Nothing of it was kept."""

    exit_code = 6
    http_status = 422
    code = "store_refused"
    retriable = False


class TransactionConflict(InstarError):
    """PostgreSQL could not serialize the transaction, or broke a deadlock with it
    (SQLSTATE 40001, 40P01): nothing of it was kept; run the whole transaction again."""

    exit_code = 3
    http_status = 409
    code = "transaction_conflict"


class DatabaseTimeout(InstarError):
    """The database gave up waiting: a ``lock_timeout`` or ``statement_timeout`` fired
    (SQLSTATE 55P03, 57014). Nothing of the statement was kept."""

    exit_code = 7
    http_status = 503
    code = "database_timeout"


class InvalidOption(InstarError, ValueError):
    """An option whose value cannot be used, such as a run_at without a time zone."""

    exit_code = 2
    http_status = 400
    code = "invalid_option"
    retriable = False


class AwakeableNotFound(InstarError):
    exit_code = 4
    http_status = 404
    code = "awakeable_not_found"

    def __init__(self, awakeable_id: str) -> None:
        self.awakeable_id = awakeable_id
        super().__init__(
            f"no awakeable with id {awakeable_id!r}; `instar show JOB` lists a job's awakeables"
        )


class SignalAlreadySettled(InstarError):
    exit_code = 3
    http_status = 409
    code = "awakeable_already_completed"

    def __init__(self, awakeable_id: str, state: str) -> None:
        self.awakeable_id = awakeable_id
        self.state = state
        super().__init__(
            f"awakeable {awakeable_id!r} is {state} already; a signal is settled only once"
        )


class SignalRejected(InstarError):
    retriable = False  # the awakeable stays rejected: a re-run would raise it again

    def __init__(self, name: str, reason: str | None) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"signal {name!r} was rejected: {reason}")


class SignalTimeout(InstarError):
    retriable = False  # the awakeable stays timed out: a re-run would raise it again

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"signal {name!r} did not arrive before its timeout")


class ChildFailed(InstarError):
    retriable = False  # the child stays failed: a re-run would join it again and fail again

    def __init__(self, child_id: int, state: str, error: object) -> None:
        self.child_id = child_id
        self.state = state
        self.error = error
        what = ""
        if isinstance(error, dict):
            what = f": {error.get('type', 'error')}: {error.get('message', '')}".rstrip(": ")
        super().__init__(f"child job {child_id} ended {state}{what}")


class Fatal(InstarError):
    """Raise this in a handler to fail the job at once, without retrying."""

    retriable = False


# -- durable machines (instar.machines) ----------------------------------------


class InvalidMachine(InstarError, ValueError):
    """A definition that breaks a rule; ``problems`` lists every one, each with
    where it is."""

    exit_code = 2
    http_status = 422
    code = "invalid_machine"
    retriable = False

    def __init__(self, name: str, problems: Sequence[str]) -> None:
        self.name = name
        self.problems = list(problems)
        listed = "\n".join(f"  - {p}" for p in self.problems)
        count = f"{len(self.problems)} problem{'' if len(self.problems) == 1 else 's'}"
        super().__init__(f"machine {name!r} is invalid ({count}):\n{listed}")


class MachineNotFound(InstarError):
    exit_code = 4
    http_status = 404
    code = "machine_not_found"
    retriable = False

    def __init__(self, name: str, version: int | None = None) -> None:
        at = "" if version is None else f" version {version}"
        super().__init__(
            f"no machine {name!r}{at} is registered; register it first "
            "(app.machines.register or `instar machines register FILE`)"
        )


class InstanceNotFound(InstarError):
    exit_code = 4
    http_status = 404
    code = "instance_not_found"
    retriable = False

    def __init__(self, machine: str, key: str) -> None:
        super().__init__(f"machine {machine!r} has no instance {key!r}; create it first")


class InstanceExists(InstarError):
    exit_code = 3
    http_status = 409
    code = "instance_exists"
    retriable = False

    def __init__(self, machine: str, key: str) -> None:
        super().__init__(f"machine {machine!r} already has an instance {key!r}")


class Conflict(InstarError):
    """A send with ``expect_seq`` found the instance moved on: read it again, decide again."""

    exit_code = 3
    http_status = 409
    code = "conflict"
    retriable = False

    def __init__(self, machine: str, key: str, expected: int, found: int) -> None:
        self.expected = expected
        self.found = found
        super().__init__(
            f"{machine} {key!r} is at seq {found}, not {expected}: another event came first; "
            "read the instance again and decide again"
        )


class DefinitionConflict(InstarError):
    exit_code = 3
    http_status = 409
    code = "definition_conflict"
    retriable = False

    def __init__(self, name: str, version: int) -> None:
        super().__init__(
            f"machine {name!r} version {version} is registered already with a different "
            f"definition; a version never changes: register the new text as version "
            f"{version + 1} and migrate instances to it (migrate)"
        )
