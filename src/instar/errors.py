"""Every error Instar raises, rooted at one class.

    InstarError
    ├── InvalidTransition      the lifecycle table refuses a move
    ├── JobNotFound            no job has this id
    ├── UnknownJob             no handler is registered under this name
    ├── PayloadError           arguments or results that are not JSON, or too large
    ├── ConfigurationError     a bad database URL, option or app reference
    │   └── DatabaseUnavailable    the database server cannot be reached (yet)
    ├── InvalidOption          an enqueue option that makes no sense (naive run_at ...)
    ├── AwakeableNotFound      no awakeable has this id
    ├── SignalAlreadySettled   the awakeable was resolved, rejected or timed out already
    ├── SignalRejected         raised in a handler: the signal it awaited was rejected
    ├── SignalTimeout          raised in a handler: the signal did not come in time
    ├── ChildFailed            raised in a handler: a joined child failed or was cancelled
    └── Fatal                  raised by a handler: fail now, no retry

Each error names the offending value and the way out; the CLI's exit codes
come from ``EXIT_CODES`` below.
"""

from __future__ import annotations

from collections.abc import Mapping


class InstarError(Exception):
    """The root of every error Instar raises on purpose."""


class InvalidTransition(InstarError):
    def __init__(self, job_id: int, from_state: str, to_state: str, reason: str = "") -> None:
        self.job_id = job_id
        self.from_state = from_state
        self.to_state = to_state
        why = f": {reason}" if reason else ""
        super().__init__(
            f"job {job_id} cannot move from {from_state!r} to {to_state!r}{why}; "
            "see `instar lifecycle` for the allowed moves"
        )


class JobNotFound(InstarError):
    def __init__(self, job_id: object) -> None:
        self.job_id = job_id
        super().__init__(f"no job with id {job_id!r}; list jobs with `instar jobs`")


class UnknownJob(InstarError):
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


class ConfigurationError(InstarError):
    """A database URL, option or app reference that cannot be used."""


class DatabaseUnavailable(ConfigurationError):
    """The server did not answer or refused us: a worker waits and tries again."""


class InvalidOption(InstarError, ValueError):
    """An option whose value cannot be used, such as a run_at without a time zone."""


class AwakeableNotFound(InstarError):
    def __init__(self, awakeable_id: str) -> None:
        self.awakeable_id = awakeable_id
        super().__init__(
            f"no awakeable with id {awakeable_id!r}; `instar show JOB` lists a job's awakeables"
        )


class SignalAlreadySettled(InstarError):
    def __init__(self, awakeable_id: str, state: str) -> None:
        self.awakeable_id = awakeable_id
        self.state = state
        super().__init__(
            f"awakeable {awakeable_id!r} is {state} already; a signal is settled only once"
        )


class SignalRejected(InstarError):
    def __init__(self, name: str, reason: str | None) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"signal {name!r} was rejected: {reason}")


class SignalTimeout(InstarError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"signal {name!r} did not arrive before its timeout")


class ChildFailed(InstarError):
    def __init__(self, child_id: int, state: str, error: object) -> None:
        self.child_id = child_id
        self.state = state
        self.error = error
        super().__init__(f"child job {child_id} ended {state}: {error}")


class Fatal(InstarError):
    """Raise this in a handler to fail the job at once, without retrying."""


EXIT_CODES: Mapping[type[InstarError], int] = {
    InvalidTransition: 3,
    JobNotFound: 4,
    UnknownJob: 5,
    PayloadError: 6,
    ConfigurationError: 7,
    InvalidOption: 2,
    AwakeableNotFound: 4,
    SignalAlreadySettled: 3,
}


def exit_code_for(error: InstarError) -> int:
    for error_type, code in EXIT_CODES.items():
        if isinstance(error, error_type):
            return code
    return 1
