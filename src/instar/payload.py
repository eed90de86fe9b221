"""JSON encoding of job arguments, results and details; never pickle.

A payload is data, not code: anything ``json`` cannot represent is refused
before it reaches the database, with the offending path named.
"""

from __future__ import annotations

import json
from typing import Any

from instar.errors import PayloadError

DEFAULT_MAX_BYTES = 1024 * 1024

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode(value: Any, *, what: str, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """Encode ``value`` as compact JSON, refusing non-JSON values and oversize payloads."""
    try:
        text = _encoder.encode(value)
    except (TypeError, ValueError) as exc:
        raise PayloadError(
            f"{what} must be JSON-serialisable (dicts, lists, str, int, float, bool, None): {exc}"
        ) from None
    size = len(text.encode("utf-8")) if len(text) * 4 > max_bytes else len(text)
    if size > max_bytes:
        raise PayloadError(
            f"{what} is {size} bytes of JSON, over the limit of {max_bytes}; "
            "store large data elsewhere and pass a reference, or raise max_payload_bytes"
        )
    return text


def decode(text: str | None) -> Any:
    return None if text is None else json.loads(text)
