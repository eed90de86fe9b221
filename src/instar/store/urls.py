"""Database URLs as people may see them: never with a password."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``: for output, logs and errors.

    ``postgresql://app:secret@db/jobs`` -> ``postgresql://app:***@db/jobs``; a
    ``password=`` query option is hidden the same way. Text that is not a URL
    comes back unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unreadable database URL>"
    if "@" not in parts.netloc and "password=" not in parts.query.lower():
        return url  # nothing to hide: keep the text exactly as given
    netloc = parts.netloc
    if "@" in netloc:
        credentials, _, host = netloc.rpartition("@")
        user, sep, _password = credentials.partition(":")
        netloc = f"{user}:***@{host}" if sep else f"{user}@{host}"
    query = "&".join(
        f"{key}=***" if key.lower() == "password" else pair
        for pair in parts.query.split("&")
        if pair
        for key in [pair.partition("=")[0]]
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
