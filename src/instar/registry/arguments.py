"""Checking a job's arguments against its handler's annotations, at enqueue.

``def resize(path: str, width: int)`` enqueued with ``{"width": "wide"}`` would
fail only when a worker runs it, maybe hours later; here it is refused at once,
naming the field. Validation is pydantic's lax mode, so JSON-compatible values
of an annotated type pass (``"2030-01-01T00:00:00Z"`` for a ``datetime``, a list
for a ``tuple``, ``3`` for a ``float``), and it never changes the arguments that
are stored: the validated copy is thrown away.

What is not checked: parameters without an annotation or annotated ``Any``,
``*args`` and ``**kwargs``, annotations pydantic has no schema for (an arbitrary
class), and every parameter of a handler whose annotations cannot be resolved
(a name only defined under ``TYPE_CHECKING``, a local class). A handler with no
annotations pays nothing: pydantic is not even imported for it (~60 ms of a
process's start, ``python -X importtime``).
"""

from __future__ import annotations

import contextlib
import inspect
import typing
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from instar.errors import PayloadError

if TYPE_CHECKING:
    from pydantic import TypeAdapter

MAX_ERRORS_SHOWN = 3
"""Problems named in one error; the rest are counted."""

_KEYWORDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


class ArgumentTypes:
    """One validator per annotated parameter of a handler (``fields``: name to
    pydantic ``TypeAdapter``)."""

    def __init__(self, fields: Mapping[str, TypeAdapter[Any]]) -> None:
        from pydantic import ValidationError

        self.fields = dict(fields)
        self._invalid = ValidationError

    def check(self, args: Mapping[str, Any], job_name: str) -> None:
        """Raise ``PayloadError`` naming every argument (up to ``MAX_ERRORS_SHOWN``)
        whose value does not fit its annotation; change nothing."""
        problems: list[str] = []
        for name, value in args.items():
            adapter = self.fields.get(name)
            if adapter is None:
                continue
            try:
                adapter.validate_python(value)
            except self._invalid as exc:
                problems += [_describe(name, error) for error in exc.errors()]
        if problems:
            more = len(problems) - MAX_ERRORS_SHOWN
            listed = "; ".join(problems[:MAX_ERRORS_SHOWN])
            tail = f"; and {more} more" if more > 0 else ""
            raise PayloadError(
                f"arguments of job {job_name!r} do not match its annotations: {listed}{tail}"
            )


def _describe(name: str, error: Mapping[str, Any]) -> str:
    """One pydantic error as ``field.path: message (got value)``."""
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"])
    got = repr(error.get("input"))
    if len(got) > 40:
        got = got[:39] + "…"
    return f"{name}{path}: {error['msg']} (got {got})"


_cache: weakref.WeakKeyDictionary[Callable[..., Any], ArgumentTypes | None] = (
    weakref.WeakKeyDictionary()
)
"""Validators by handler: a definition copied for another App (``App.definition``)
builds none again."""


def argument_types(
    fn: Callable[..., Any], params: Sequence[inspect.Parameter]
) -> ArgumentTypes | None:
    """The validator for ``fn``'s keyword parameters ``params`` (the context left
    out), or None when there is nothing to check. Built once per handler."""
    if not any(p.annotation is not p.empty and p.kind in _KEYWORDS for p in params):
        return None
    try:
        return _cache[fn]
    except (KeyError, TypeError):  # not built yet; or fn cannot be weakly referenced
        pass
    built = _build(fn, params)
    with contextlib.suppress(TypeError):
        _cache[fn] = built
    return built


def _build(fn: Callable[..., Any], params: Sequence[inspect.Parameter]) -> ArgumentTypes | None:
    from pydantic import TypeAdapter

    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:
        try:  # a callable object: its __call__ holds the annotations
            hints = typing.get_type_hints(type(fn).__call__, include_extras=True)
        except Exception:
            return None
    fields: dict[str, TypeAdapter[Any]] = {}
    for param in params:
        hint = hints.get(param.name, Any)
        if param.kind not in _KEYWORDS or hint is Any:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fields[param.name] = TypeAdapter(hint)
        except Exception:  # no schema for this type: leave it unchecked
            continue
    return ArgumentTypes(fields) if fields else None
