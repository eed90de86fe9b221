"""Who a request acts for: the bearer token in its ``Authorization`` header
(RFC 6750 2.1; never a query parameter, which ends up in logs), and what that
token may do. Checked on every request, so a revocation takes effect on the next.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request

from instar.vocabulary import Actor
from instar.web.problems import Problem
from instar.web.state import read, web_state
from instar.web.tokens import SCOPES, Principal, authenticate

NO_AUTH = Principal(Actor.HTTP.value, frozenset(SCOPES))
"""The principal of every request when the server runs with ``--no-auth``."""


async def principal(request: Request) -> Principal:
    """The request's principal; ``Problem`` 401 without a live token."""
    state = web_state(request)
    if not state.settings.auth:
        return NO_AUTH
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Problem(
            401,
            "unauthorized",
            "send a token as 'Authorization: Bearer <token>' (make one with `instar token create`)",
            headers={"WWW-Authenticate": 'Bearer realm="instar"'},
        )
    found = await read(state, authenticate, state.app.engine.store, secret.strip())
    if found is None:
        raise Problem(
            401,
            "unauthorized",
            "the token is unknown or revoked",
            headers={"WWW-Authenticate": 'Bearer realm="instar", error="invalid_token"'},
        )
    return found


def needs(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the principal, when its token has ``scope``; 403 otherwise."""

    async def check(request: Request) -> Principal:
        who = await principal(request)
        if not who.grants(scope):
            raise Problem(
                403,
                "insufficient_scope",
                f"this needs a token with the {scope!r} scope; {who.name!r} has "
                f"{', '.join(sorted(who.scopes))}",
                headers={
                    "WWW-Authenticate": f'Bearer realm="instar", error="insufficient_scope", '
                    f'scope="{scope}"'
                },
            )
        return who

    check.__name__ = f"needs_{scope}"
    return check


def queue_filter(who: Principal, asked: str | None) -> str | None:
    """The queue a listing reads: the one ``asked`` for, or the token's own when
    it is limited to one (``Problem`` 403 when the two differ)."""
    if who.queue is None:
        return asked
    if asked is not None:
        check_queue(who, asked)
    return who.queue


def check_queue(who: Principal, queue: str) -> None:
    """403 when ``who`` is limited to another queue than ``queue``."""
    if who.queue is not None and queue != who.queue:
        raise Problem(
            403,
            "insufficient_scope",
            f"token {who.name!r} may act only on queue {who.queue!r}, not {queue!r}",
        )
