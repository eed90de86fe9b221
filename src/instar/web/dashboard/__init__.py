"""The web dashboard: server-rendered pages (Jinja2, htmx vendored in
``static``) at ``/``, on the same server, database and tokens as the HTTP API.

What a browser may load is what this server sends: the Content-Security-Policy
allows scripts, styles, images and connections from this origin only, no
inline script and no inline style, so a job name or an error holding markup can
never run (the templates escape it too).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from instar.web.dashboard.session import Forbidden, LoginNeeded, session_key
from instar.web.dashboard.views import login_redirect, router, templates
from instar.web.state import PREFIX, WebState

STATIC = "/ui/static"
HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]
"""Sent with every response outside the API (OWASP secure headers project)."""


class SecureHeaders:
    """Adds ``HEADERS`` to every response outside ``/api`` (the API's own
    answers are JSON for programs, and its hot routes pay nothing)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, receive, sending)


def _forbidden(request: Request, refused: Exception) -> Response:
    """The reason, as a page; to an htmx request, as the page's notice line
    (the part it asked for stays as it was)."""
    message = refused.message if isinstance(refused, Forbidden) else str(refused)
    if request.headers.get("hx-request") == "true":
        notice = templates.get_template("notice.html").render(message=message)
        headers = {"HX-Retarget": "#stream-note", "HX-Reswap": "outerHTML"}
        return HTMLResponse(notice, 403, headers)
    page = templates.get_template("forbidden.html").render(message=message)
    return HTMLResponse(page, 403)


def install(api: FastAPI, web: WebState) -> None:
    """Serve the dashboard from ``api``: its pages, its static files, its errors."""
    api.state.dashboard_key = session_key(web)
    api.router.routes.extend(router.routes)
    api.mount(STATIC, StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    api.add_exception_handler(LoginNeeded, login_redirect)
    api.add_exception_handler(Forbidden, _forbidden)
    api.add_middleware(SecureHeaders)
