"""Tokens over HTTP, for a token with the ``admin`` scope: make one (never
broader than the admin's own: a queue-limited admin makes only tokens limited
to its queue), list them (never their secrets), revoke one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from instar.models import ApiToken
from instar.web.auth import needs
from instar.web.problems import Problem
from instar.web.state import PREFIX, web_state
from instar.web.tokens import Principal, create, digest

router = APIRouter(prefix=PREFIX, tags=["tokens"])


class TokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    scopes: list[str] = Field(min_length=1)
    queue: str | None = None


class TokenShape(BaseModel):
    name: str
    scopes: list[str]
    queue: str | None
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, token: ApiToken) -> TokenShape:
        return cls(
            name=token.name,
            scopes=sorted(token.scopes),
            queue=token.queue,
            created_at=datetime.fromtimestamp(token.created_at, UTC),
            revoked_at=None
            if token.revoked_at is None
            else datetime.fromtimestamp(token.revoked_at, UTC),
        )


class MadeToken(TokenShape):
    """``token``: the secret, shown this once (only its digest is kept)."""

    token: str


@router.post("/tokens", response_model=MadeToken, status_code=201)
def make_token(
    request: Request, body: TokenBody, who: Annotated[Principal, Depends(needs("admin"))]
) -> MadeToken:
    app = web_state(request).app
    secret = create(app.engine.store, body.name, body.scopes, body.queue, app.clock.now(), by=who)
    made = app.engine.store.token_by_digest(digest(secret))
    assert made is not None  # stored just now
    return MadeToken(**TokenShape.of(made).model_dump(), token=secret)


@router.get("/tokens", response_model=list[TokenShape])
def list_tokens(
    request: Request, _: Annotated[Principal, Depends(needs("admin"))]
) -> list[TokenShape]:
    return [TokenShape.of(t) for t in web_state(request).app.engine.store.tokens()]


@router.delete("/tokens/{name}", status_code=204, response_class=Response)
def revoke_token(
    request: Request, name: str, _: Annotated[Principal, Depends(needs("admin"))]
) -> Response:
    """Revoke a token: refused from its next request on."""
    app = web_state(request).app
    if not app.engine.store.revoke_token(name, app.clock.now()):
        raise Problem(404, "token_not_found", f"no live token named {name!r}")
    return Response(status_code=204)
