"""Commands of the HTTP API: serve it, and make, list and revoke its tokens."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

import click
from rich.markup import escape
from rich.table import Table

from instar.cli.common import (
    app_option,
    database_option,
    err,
    json_option,
    opened_app,
    out,
    print_json,
    reports_errors,
)
from instar.errors import ConfigurationError, InvalidOption
from instar.web import tokens


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@database_option
@app_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--no-auth",
    is_flag=True,
    help="Accept requests without a token (local development only: loopback addresses only).",
)
@click.option(
    "--max-streams",
    default=100,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Event streams open at once; more are refused with 503 until one closes.",
)
@reports_errors
def serve(
    database: str | None,
    app_ref: str | None,
    host: str,
    port: int,
    no_auth: bool,
    max_streams: int,
) -> None:
    """Serve the HTTP API (JSON under /api/v1) on the database."""
    if no_auth and not _loopback(host):
        raise InvalidOption(
            f"--no-auth serves only a loopback address (127.0.0.1, ::1), not {host!r}: "
            "anyone who reaches it could act on every job"
        )
    try:
        import uvicorn

        from instar.web import create_app
    except ImportError as missing:
        raise ConfigurationError(
            f"the HTTP API needs the web extra ({missing.name} is missing): "
            "pip install 'instar[web]'"
        ) from None
    with opened_app(database, app_ref) as app:
        api = create_app(app, auth=not no_auth, max_streams=max_streams)
        if no_auth:
            err.print(
                "[bold yellow]warning:[/] serving WITHOUT authentication (--no-auth): "
                "every request may act on every job; for local development only"
            )
        err.print(f"serving the HTTP API on http://{escape(host)}:{port}/api/v1")
        uvicorn.run(api, host=host, port=port, log_level="warning", access_log=False)


@click.group()
def token() -> None:
    """Bearer tokens of the HTTP API."""


@token.command("create")
@click.argument("name")
@app_option
@database_option
@click.option(
    "--scope",
    "scopes",
    required=True,
    help=f"Comma-separated scopes among {', '.join(tokens.SCOPES)}.",
)
@click.option("--queue", default=None, help="Let the token act on this queue only.")
@reports_errors
def create(
    name: str, app_ref: str | None, database: str | None, scopes: str, queue: str | None
) -> None:
    """Make a token; it is printed once and only its digest is kept."""
    with opened_app(database, app_ref) as app:
        secret = tokens.create(app.engine.store, name, scopes.split(","), queue, app.clock.now())
    click.echo(secret)
    err.print(f"token {escape(name)!r} made; it is shown only now: keep it somewhere safe")


@token.command("list")
@app_option
@database_option
@json_option
@reports_errors
def list_tokens(app_ref: str | None, database: str | None, as_json: bool) -> None:
    """Every token made on the database, revoked ones too (never the secrets)."""
    with opened_app(database, app_ref, read_only=True) as app:
        found = app.engine.store.tokens()
    rows = [
        {
            "name": t.name,
            "scopes": sorted(t.scopes),
            "queue": t.queue,
            "created_at": _iso(t.created_at),
            "revoked_at": None if t.revoked_at is None else _iso(t.revoked_at),
        }
        for t in found
    ]
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print("no tokens yet: make one with `instar token create NAME --scope read`")
        return
    table = Table("name", "scopes", "queue", "created", "revoked")
    for row in rows:
        table.add_row(
            escape(str(row["name"])),
            ",".join(row["scopes"]),  # type: ignore[arg-type]
            escape(str(row["queue"] or "any")),
            str(row["created_at"]),
            str(row["revoked_at"] or ""),
        )
    out.print(table)


@token.command("revoke")
@click.argument("name")
@app_option
@database_option
@reports_errors
def revoke(name: str, app_ref: str | None, database: str | None) -> None:
    """Revoke a token: the next request that presents it is refused."""
    with opened_app(database, app_ref) as app:
        if not app.engine.store.revoke_token(name, app.clock.now()):
            raise InvalidOption(f"no live token named {name!r}; `instar token list` shows them")
    out.print(f"token {escape(name)!r} revoked")


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


COMMANDS: tuple[click.Command, ...] = (serve, token)
