"""JSON encoding of job arguments, results and details; never pickle.

A payload is data, not code: anything ``json`` cannot represent is refused
before it reaches the database, with the offending path named.

Text from Python is not always valid Unicode: ``os.listdir``, ``os.fsdecode``
and subprocess output on a mis-set locale give strings with lone surrogates
(``"caf\\udce9"``), which no database can store as UTF-8. They are data, not a
crash: ``encode`` escapes them in the JSON (``"caf\\\\udce9"``, which decodes
back to the very same string), and ``safe_text`` does the same for the few
plain-text columns (a rejection's reason, a signal's or step's name).
"""

from __future__ import annotations

import json
from typing import Any

from instar.errors import PayloadError

DEFAULT_MAX_BYTES = 1024 * 1024

MAX_ERROR_MESSAGE = 8 * 1024
"""Characters of an error's message kept in the job and its timeline."""
MAX_TRACEBACK = 32 * 1024
"""Characters of an error's traceback kept (its last ones: where it was raised)."""
MAX_PROGRESS_MESSAGE = 1024
"""Characters of a progress message kept."""
MAX_TEXT = 4 * 1024
"""Characters of other free text kept: a rejection's reason, an actor."""

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_ascii_encoder = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def encode(value: Any, *, what: str, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """Encode ``value`` as compact JSON that any database stores as UTF-8.

    Raises ``PayloadError`` for values that are not JSON (a set, NaN, an object)
    and for JSON over ``max_bytes`` bytes, naming ``what`` it was."""
    if value is None and max_bytes >= 4:
        return "null"  # what most handlers return: no encoder call for it (~2 µs a job)
    try:
        text = _encoder.encode(value)
        if not text.isascii():
            try:
                size = len(text.encode("utf-8"))
            except UnicodeEncodeError:  # lone surrogates: escape them all
                text = _ascii_encoder.encode(value)
                size = len(text)
        else:
            size = len(text)
    except (TypeError, ValueError) as exc:
        raise PayloadError(
            f"{what} must be JSON-serialisable (dicts, lists, str, int, float, bool, None; "
            f"no NaN or infinity): {exc}"
        ) from None
    if size > max_bytes:
        raise PayloadError(
            f"{what} is {size} bytes of JSON, over the limit of {max_bytes}; "
            "store large data elsewhere and pass a reference, or raise max_payload_bytes"
        )
    return text


def decode(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def cut(text: str, limit: int, *, keep: str = "start") -> str:
    """``text`` if it has at most ``limit`` characters, else ``limit`` of them
    (the first, or with ``keep="end"`` the last) and a marker saying so."""
    if len(text) <= limit:
        return text
    marker = f"[cut: {len(text):,} characters, {limit:,} kept]"
    if keep == "end":
        return f"{marker} …{text[-limit:]}"
    return f"{text[:limit]}… {marker}"


def safe_text(text: str, limit: int = MAX_TEXT) -> str:
    """Free text as a database can store it: lone surrogates and NUL escaped as
    ``\\udcxx`` and ``\\x00``, cut to ``limit`` characters with a marker."""
    if not text.isascii() or "\x00" in text:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return cut(text, limit)
