"""Who a dashboard request acts for, and whether a form it posts is its own.

A token pasted once on ``/login`` becomes a session: an ``HttpOnly``,
``SameSite=Strict`` cookie holding the token's SHA-256 digest (never the
token), a random session id and an expiry, signed with HMAC-SHA256 under a key
kept in the database (so every server on the database accepts it). The token
is looked up again on every request (an open event stream asks again every few
seconds), so a revocation ends its sessions. Signing out removes the cookie
from the browser; a copy of it stays valid until it expires or its token is
revoked (sessions are not stored on the server).

Every form and every htmx request carries the session's CSRF token, an HMAC of
the session id (OWASP's "signed double-submit" pattern): a page of another
site can neither read it nor, under ``SameSite=Strict``, send the cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

from fastapi import Request, Response

from instar.web.auth import NO_AUTH
from instar.web.state import WebState, read, web_state
from instar.web.tokens import Principal, authenticate, digest

COOKIE = "instar_session"
LOGIN_COOKIE = "instar_login"
"""The sign-in form's own nonce: its CSRF token is an HMAC of it, so that
another site cannot sign a browser in under a token of its choosing."""
KEY_NAME = "dashboard_sessions"
LIFETIME = 12 * 3600
"""Seconds a session lasts (a working day); then the token is asked again."""


class LoginNeeded(Exception):
    """The request has no live session: the dashboard asks for a token."""


class Forbidden(Exception):
    """The session may not do what the request asks (scope, or a CSRF token
    that is missing or not the session's)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Session:
    """A request's principal and its CSRF token; ``cookie``: a new session's
    cookie value to set on the response (None when the browser has it)."""

    principal: Principal
    csrf: str
    cookie: str | None = None

    def may(self, scope: str) -> bool:
        return self.principal.grants(scope)


def _sign(key: bytes, data: str) -> str:
    mac = hmac.new(key, data.encode("ascii", "replace"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def _csrf(key: bytes, session_id: str) -> str:
    return _sign(key, f"csrf:{session_id}")


def _cookie(key: bytes, digest: str, now: float) -> tuple[str, str]:
    """A signed cookie value and its session id."""
    session_id = secrets.token_urlsafe(16)
    body = json.dumps({"d": digest, "s": session_id, "e": int(now + LIFETIME)})
    data = base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")
    return f"{data}.{_sign(key, data)}", session_id


def _unpack(key: bytes, value: str, now: float) -> tuple[str, str] | None:
    """(digest, session id) of a cookie this server signed and that has not expired."""
    data, _, signature = value.partition(".")
    if not data or not hmac.compare_digest(_sign(key, data), signature):
        return None
    try:
        body = json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
        digest, session_id, expires = str(body["d"]), str(body["s"]), float(body["e"])
    except (ValueError, KeyError, TypeError):
        return None
    return (digest, session_id) if expires > now else None


def session_key(web: WebState) -> bytes:
    """The key sessions are signed with (made once, kept in the database)."""
    return bytes.fromhex(web.app.engine.store.key(KEY_NAME, lambda: secrets.token_hex(32)))


async def current(request: Request) -> Session:
    """The request's session; ``LoginNeeded`` without a live one. Without auth
    (``--no-auth``) every browser gets a session, for its CSRF token."""
    web = web_state(request)
    key = request.app.state.dashboard_key
    now = web.app.clock.now()
    found = _unpack(key, request.cookies.get(COOKIE, ""), now)
    if not web.settings.auth:
        if found is not None:
            return Session(NO_AUTH, _csrf(key, found[1]))
        value, session_id = _cookie(key, "", now)
        return Session(NO_AUTH, _csrf(key, session_id), value)
    if found is None:
        raise LoginNeeded
    digest, session_id = found
    token = await read(web, web.app.engine.store.token_by_digest, digest)
    if token is None:
        raise LoginNeeded
    session = Session(Principal(token.name, token.scopes, token.queue), _csrf(key, session_id))
    if not session.may("read"):
        raise Forbidden(
            f"token {token.name!r} may not read jobs (it has {', '.join(sorted(token.scopes))}); "
            "the dashboard needs a token with the 'read' scope"
        )
    return session


async def log_in(request: Request, secret: str) -> str | None:
    """A session cookie for a live token, or None; ``Forbidden`` for a token
    without the ``read`` scope (every page reads)."""
    web = web_state(request)
    found = await read(web, authenticate, web.app.engine.store, secret.strip())
    if found is None:
        return None
    if not found.grants("read"):
        raise Forbidden(
            f"token {found.name!r} may not read jobs (it has {', '.join(sorted(found.scopes))}); "
            "the dashboard needs a token with the 'read' scope"
        )
    return _cookie(request.app.state.dashboard_key, digest(secret.strip()), web.app.clock.now())[0]


def login_form(request: Request) -> tuple[str, str]:
    """The sign-in form's CSRF token and the nonce cookie it is bound to."""
    nonce = secrets.token_urlsafe(16)
    return _sign(request.app.state.dashboard_key, f"login:{nonce}"), nonce


def check_login_form(request: Request, sent: str) -> None:
    """``Forbidden`` unless ``sent`` is the CSRF token of the form this browser loaded."""
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    wanted = _sign(request.app.state.dashboard_key, f"login:{nonce}")
    if not nonce or not hmac.compare_digest(sent.encode(), wanted.encode()):
        raise Forbidden("this sign-in form is not one this dashboard showed you: load it again")


def set_cookie(
    response: Response, value: str, secure: bool, name: str = COOKIE, lifetime: int = LIFETIME
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=lifetime,
        httponly=True,
        samesite="strict",
        secure=secure,
        path="/",
    )


async def check_post(
    request: Request, session: Session, scope: str | None, sent: str | None
) -> None:
    """``Forbidden`` unless ``sent`` (the form's or the header's CSRF token) is
    the session's and its token has ``scope`` (None: any token)."""
    sent = sent or request.headers.get("x-csrf-token", "")
    if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise Forbidden("this form is not one this dashboard showed you (no or a stale CSRF token)")
    if scope is not None and not session.may(scope):
        raise Forbidden(
            f"token {session.principal.name!r} may not do this: it needs the {scope!r} scope"
        )
