"""Bearer tokens of the HTTP API: made, checked, revoked.

A token is ``instar_`` and 43 URL-safe characters: 256 random bits from
``secrets`` (at least 128 are wanted, OWASP ASVS 3.5). Only its SHA-256 digest
is stored; a fast digest is enough because the secret is random and long (no
dictionary to try), unlike a password. The digest is looked up by its index,
then compared with ``hmac.compare_digest``. A token's name is the actor of
every event it causes, so names are never reused, even after a revocation.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from instar.errors import InvalidOption
from instar.models import ApiToken
from instar.registry.limits import check_name
from instar.store.contract import Store
from instar.vocabulary import Actor

PREFIX = "instar_"
SCOPES = ("read", "enqueue", "operate", "resolve", "admin")
"""read: every GET; enqueue: create jobs; operate: verbs on jobs and queues;
resolve: settle awakeables; admin: all of these, and making tokens."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts for: the token's name (the events' actor), its scopes,
    and the one queue whose jobs it may read and act on (None: any)."""

    name: str
    scopes: frozenset[str]
    queue: str | None = None

    def grants(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


def digest(secret: str) -> str:
    """The stored form of a token: SHA-256 of its text, in hex."""
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def check_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """Scopes named in ``SCOPES``; ``InvalidOption`` for none or an unknown one."""
    chosen = frozenset(s.strip() for s in scopes if s.strip())
    unknown = sorted(chosen - set(SCOPES))
    if unknown:
        raise InvalidOption(f"unknown scope {unknown[0]!r}; scopes are {', '.join(SCOPES)}")
    if not chosen:
        raise InvalidOption(f"a token needs at least one scope of {', '.join(SCOPES)}")
    return chosen


def create(
    store: Store,
    name: str,
    scopes: Iterable[str],
    queue: str | None,
    now: float,
    *,
    by: Principal | None = None,
) -> str:
    """Make a token and store its digest; returns the token (shown once, kept
    nowhere). ``by``: the principal asking over HTTP, which cannot make a token
    broader than its own. ``InvalidOption`` for a bad or taken name, unknown
    scopes, or a token broader than ``by``'s."""
    name = check_name(name, "token name")
    if name in {actor.value for actor in Actor} or name.startswith("job "):
        raise InvalidOption(f"{name!r} is a name Instar records as an actor itself; choose another")
    chosen = check_scopes(scopes)
    queue = None if queue is None else check_name(queue, "queue")
    if by is not None:
        broader = sorted(s for s in chosen if not by.grants(s))
        if broader or (by.queue is not None and queue != by.queue):
            raise InvalidOption(
                f"a token cannot be broader than the one that makes it ({by.name!r})"
            )
    secret = PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(name, digest(secret), chosen, queue, now, None)
    if not store.add_token(token):
        raise InvalidOption(
            f"a token named {name!r} exists or existed; names are never reused, "
            "so that events name one token each: choose another"
        )
    return secret


def authenticate(store: Store, secret: str) -> Principal | None:
    """The principal of a live token, or None (unknown, malformed or revoked)."""
    if not secret.startswith(PREFIX) or len(secret) > 200:
        return None
    wanted = digest(secret)
    found = store.token_by_digest(wanted)
    if found is None or not hmac.compare_digest(found.digest, wanted):
        return None
    return Principal(found.name, found.scopes, found.queue)
