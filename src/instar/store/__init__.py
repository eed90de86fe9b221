"""Backends and the one function that picks a backend from a database URL."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from instar.errors import ConfigurationError
from instar.store.contract import Store
from instar.store.urls import redact

DEFAULT_DATABASE = "sqlite:///instar.db"


def open_store(url: str, *, read_only: bool = False) -> Store:
    """Open (and migrate) the store a URL names.

    ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or a plain
    file path select SQLite; ``?synchronous=normal`` trades durability of the
    last commits on power loss for speed. ``postgresql://user@host:5432/db``
    selects PostgreSQL; ``?schema=instar`` keeps Instar's tables in that schema.

    ``read_only``: open for reading only. Nothing is created or migrated: a
    missing SQLite file or an Instar schema that is absent or older than this
    version raises ``ConfigurationError`` saying so, and any write is refused.
    """
    if "://" not in url:
        url = "sqlite:///" + url
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        from instar.store.sqlite.store import SQLiteStore

        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path:
            raise ConfigurationError(
                f"database URL {redact(url)!r} names no file; write sqlite:///path/to/jobs.db"
            )
        options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(options) - {"synchronous"}
        if unknown:
            raise ConfigurationError(
                f"unknown SQLite option(s) {sorted(unknown)} in {redact(url)!r}; "
                "the only one is synchronous"
            )
        store = SQLiteStore(
            path, synchronous=options.get("synchronous", "full"), read_only=read_only
        )
        _ready(store, read_only, redact(url))
        return store
    if parts.scheme in ("postgres", "postgresql"):
        try:
            from instar.store.postgres.store import PostgresStore
        except ImportError:
            raise ConfigurationError(
                "the PostgreSQL backend needs psycopg: pip install 'instar[postgres]'"
            ) from None
        pg = PostgresStore(url, read_only=read_only)
        _ready(pg, read_only, redact(url))
        return pg
    raise ConfigurationError(
        f"unsupported database URL {redact(url)!r}; use sqlite:///path/to/jobs.db "
        "or postgresql://user@host:5432/db"
    )


def _ready(store: Store, read_only: bool, where: str) -> None:
    """Migrate a store opened for writing; check that one opened read-only needs nothing."""
    if not read_only:
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
        return
    have, want = store.schema_version()
    if have < want:
        store.close()
        missing = "has no Instar schema" if have == 0 else f"has schema version {have} of {want}"
        raise ConfigurationError(
            f"the database at {where} {missing}; run `instar migrate --database ...` first"
        )
