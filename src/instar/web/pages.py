"""Page tokens of keyset pagination: where the next page starts and the filter
it belongs to, signed (HMAC-SHA256 with a key kept in the database) so that a
client can neither forge a position nor carry a token over to another filter."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from instar.web.problems import Problem

KEY_NAME = "page_tokens"


def encode_page(key: bytes, position: int, scope: dict[str, Any]) -> str:
    """A token for the page after ``position`` under the filter ``scope``."""
    body = json.dumps({"p": position, "s": scope}, sort_keys=True, separators=(",", ":"))
    data = base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")
    return f"{data}.{_sign(key, data)}"


def decode_page(key: bytes, token: str, scope: dict[str, Any]) -> int:
    """The position a token names; ``Problem`` 400 ``invalid_page_token`` when it
    is malformed, forged, or was made for another filter."""
    data, _, signature = token.partition(".")
    if not hmac.compare_digest(_sign(key, data), signature):
        raise Problem(400, "invalid_page_token", "the page token is not one this server made")
    try:
        body = json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
        position, made_for = int(body["p"]), body["s"]
    except (ValueError, KeyError, TypeError) as exc:
        raise Problem(400, "invalid_page_token", "the page token is malformed") from exc
    if made_for != json.loads(json.dumps(scope, sort_keys=True)):
        raise Problem(
            400,
            "invalid_page_token",
            "the page token belongs to another filter; start again without it",
        )
    return position


def _sign(key: bytes, data: str) -> str:
    mac = hmac.new(key, data.encode("ascii", "replace"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")
