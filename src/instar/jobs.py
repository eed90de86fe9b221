"""A registered handler and what Instar learns about it at registration."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from instar.errors import ConfigurationError, PayloadError
from instar.retry import Retry

if TYPE_CHECKING:
    from instar.app import App
    from instar.models import Job


@dataclass(frozen=True)
class JobOptions:
    queue: str = "default"
    lease: float = 30.0
    timeout: float | None = None
    retry: Retry = field(default_factory=Retry)
    priority: int = 0
    pause_timeout: float = 86400.0
    service: bool = False

    def __post_init__(self) -> None:
        if not self.queue:
            raise ConfigurationError("a job's queue name must not be empty")
        if self.lease <= 0:
            raise ConfigurationError(f"lease must be positive seconds, got {self.lease}")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigurationError(
                f"timeout must be positive seconds or None, got {self.timeout}"
            )


class JobDefinition:
    """A handler registered under a name; call ``enqueue`` to create jobs.

    Handlers take their arguments as keywords. If the first parameter is named
    ``ctx`` (or annotated ``instar.Context``) it receives the job's context.
    """

    def __init__(self, app: App, fn: Callable[..., Any], name: str, options: JobOptions) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.options = options
        self.is_async = inspect.iscoroutinefunction(fn)
        self._signature = inspect.signature(fn)
        params = list(self._signature.parameters.values())
        self.takes_context = bool(params) and (
            params[0].name == "ctx" or _is_context_annotation(params[0].annotation)
        )
        self._arg_signature = self._signature.replace(
            parameters=params[1:] if self.takes_context else params
        )
        self._accepted_names: set[frozenset[str]] = set()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the handler directly, in this process, with no job involved."""
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<JobDefinition {self.name} queue={self.options.queue}>"

    def check_arguments(self, args: Mapping[str, Any]) -> None:
        """Refuse arguments the handler could never accept, before anything is stored.

        Whether keywords bind depends only on their names, so a set of names
        that bound once is remembered (bulk enqueues repeat the same names)."""
        names = frozenset(args)
        if names in self._accepted_names:
            return
        try:
            self._arg_signature.bind(**args)
        except TypeError as exc:
            raise PayloadError(
                f"arguments for job {self.name!r} do not match "
                f"{self.name}{self._arg_signature}: {exc}"
            ) from None
        self._accepted_names.add(names)

    def enqueue(self, **kwargs: Any) -> Job:
        """Create one job; options (delay, run_at, priority, queue, key) are keywords too."""
        args, options = _split_options(kwargs)
        return self.app.enqueue(self, args, **options)

    async def enqueue_async(self, **kwargs: Any) -> Job:
        args, options = _split_options(kwargs)
        return await self.app.enqueue_async(self, args, **options)


ENQUEUE_OPTIONS = frozenset({"delay", "run_at", "priority", "queue", "key", "after", "connection"})


def _split_options(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Enqueue options share the keyword space with the handler's arguments."""
    args = {k: v for k, v in kwargs.items() if k not in ENQUEUE_OPTIONS}
    options = {k: v for k, v in kwargs.items() if k in ENQUEUE_OPTIONS}
    return args, options


def _is_context_annotation(annotation: Any) -> bool:
    from instar.context import Context

    return annotation is Context or annotation in {"Context", "instar.Context"}
