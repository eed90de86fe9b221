"""The limits every way of creating a job enforces, the same on both backends.

SQLite and PostgreSQL accept different things (SQLite stores any integer up to
64 bits and any text; PostgreSQL's ``integer`` is 32 bits, its text refuses NUL
and its indexes refuse long keys), so Instar checks each value once, here,
before anything reaches a database. The README's "Limits" section lists them.

Each ``check_*`` returns the value as it is stored, or raises ``InvalidOption``
(a bad enqueue option) or ``ConfigurationError`` (``for_code=True``: a bad
value written in a job's definition), naming the value and the limit.
"""

from __future__ import annotations

import math
import operator
import re
import unicodedata
from datetime import datetime
from numbers import Real
from typing import SupportsIndex

from instar.errors import ConfigurationError, InstarError, InvalidOption

MAX_ID = 2**63 - 1
"""Job ids are 64-bit signed integers on both backends: 1 to 2**63 - 1."""

MIN_PRIORITY = -(2**31)
MAX_PRIORITY = 2**31 - 1
"""Priorities are 32-bit signed integers: -2,147,483,648 to 2,147,483,647."""

MAX_DELAY = 3650 * 86400.0
"""The latest a job may start: 3,650 days (about ten years) from now, in seconds.
A ``delay`` is 0 to this; a ``run_at`` at most this far ahead (one in the past starts now)."""

MAX_NAME_BYTES = 200
"""Job names and queue names: 1 to 200 bytes of UTF-8, no control characters."""

MAX_KEY_BYTES = 1000
"""Idempotency keys: 1 to 1,000 bytes of UTF-8, no NUL."""

_LAST_READABLE = 253402300799.0
"""9999-12-31T23:59:59Z in epoch seconds: the last time a datetime can hold."""

MAX_LIST = 10_000
"""The most jobs one listing returns (``instar jobs --limit``, ``app.jobs(limit=)``)."""


def _error(message: str, *, for_code: bool) -> InstarError:
    return ConfigurationError(message) if for_code else InvalidOption(message)


def shown(value: str, width: int = 40) -> str:
    """``value`` as a reader may see it in an error: quoted, escaped (lone surrogates,
    control characters), and cut after ``width`` characters."""
    if len(value) > width:
        return repr(value[:width])[:-1] + "…" + repr(value)[-1]
    return repr(value)


def check_id(value: object, what: str = "job id") -> int:
    """A job id: an integer (not a bool) from 1 to ``MAX_ID``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidOption(f"{what} must be a whole number, got {type(value).__name__}")
    if not 1 <= value <= MAX_ID:
        raise InvalidOption(f"{what} must be from 1 to {MAX_ID:,}, got {value:,}")
    return value


def check_priority(value: object, *, for_code: bool = False) -> int:
    """A priority: an integer (not a bool, not a float or str) from ``MIN_PRIORITY``
    to ``MAX_PRIORITY``; higher runs first."""
    if isinstance(value, bool):
        raise _error("priority must be a whole number, got bool", for_code=for_code)
    # An int first: the check against the protocol costs microseconds on each enqueue.
    if not isinstance(value, int) and not isinstance(value, SupportsIndex):
        raise _error(
            f"priority must be a whole number, got {type(value).__name__} {value!r:.40}",
            for_code=for_code,
        )
    number = operator.index(value)
    if not MIN_PRIORITY <= number <= MAX_PRIORITY:
        raise _error(
            f"priority must be from {MIN_PRIORITY:,} to {MAX_PRIORITY:,} "
            f"(a 32-bit integer), got {number:,}",
            for_code=for_code,
        )
    return number


def check_delay(value: object) -> float:
    """A delay: a real number of seconds (int or float; not a bool or a str), finite,
    from 0 to ``MAX_DELAY``."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InvalidOption(
            f"delay must be a number of seconds, got {type(value).__name__} {value!r:.40}"
        )
    seconds = float(value)
    if math.isnan(seconds):
        raise InvalidOption("delay must be a number of seconds, got NaN")
    if seconds < 0:
        raise InvalidOption(f"delay must not be negative, got {seconds:g}")
    if seconds > MAX_DELAY:
        raise InvalidOption(
            f"delay must be at most {MAX_DELAY:,.0f} seconds (3,650 days), got {seconds:g}"
        )
    return seconds


def check_instant(value: object, what: str) -> float:
    """An aware ``datetime`` as epoch seconds; ``InvalidOption`` for anything
    else, naming ``what``."""
    if not isinstance(value, datetime):
        raise InvalidOption(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidOption(
            f"{what} {value.isoformat()} has no time zone; pass an aware datetime, "
            "e.g. datetime.now(timezone.utc) (over HTTP: ISO 8601 with Z or an offset)"
        )
    return value.timestamp()


def check_run_at(value: object, now: float) -> float:
    """A start time: an aware ``datetime`` at most ``MAX_DELAY`` seconds after ``now``
    (epoch seconds); returns it as epoch seconds."""
    start = check_instant(value, "run_at")
    assert isinstance(value, datetime)  # check_instant refused anything else
    if start - now > MAX_DELAY:
        raise InvalidOption(
            f"run_at {value.isoformat()} is more than 3,650 days ahead; the latest start "
            "is 3,650 days from now"
        )
    return start


def check_start(start: float | None) -> float | None:
    """A start time in epoch seconds as a Placement carries it: None, or a finite
    number within the years 1970 to 9999 (what both backends store and read back as
    a datetime). ``start_time`` keeps it within ``MAX_DELAY`` of now; this guards
    any other path that builds a Placement."""
    if start is None:
        return None
    if isinstance(start, bool) or not isinstance(start, Real) or not math.isfinite(start):
        raise InvalidOption(f"a start time must be finite epoch seconds, got {start!r:.40}")
    if not 0 <= start <= _LAST_READABLE:
        raise InvalidOption(f"a start time must fall in the years 1970 to 9999, got {start:g}")
    return float(start)


def utf8_problem(text: str) -> str | None:
    """What keeps ``text`` from being stored as UTF-8 text, in words (``is not valid
    UTF-8 (byte 0xff at character 3)``, ``contains NUL (\\x00)``), or None. A byte
    that is not UTF-8 in a command-line argument reaches Python as a lone surrogate
    (U+DC80 to U+DCFF); the byte is named."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        byte = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
        return f"is not valid UTF-8 ({byte} at character {exc.start})"
    if "\x00" in text:
        return "contains NUL (\\x00)"
    return None


def check_text(
    value: object,
    what: str,
    *,
    max_bytes: int,
    printable: bool = True,
    for_code: bool = False,
) -> str:
    """Text as a database stores it: a non-empty str, valid UTF-8 (no lone surrogates,
    such as Python makes of a byte like 0xff in a command-line argument), no NUL, at
    most ``max_bytes`` bytes; with ``printable`` no control characters either (a
    name is shown in tables and logs)."""
    if not isinstance(value, str):
        raise _error(f"{what} must be text, got {type(value).__name__}", for_code=for_code)
    if not value:
        raise _error(f"{what} must not be empty", for_code=for_code)
    problem = utf8_problem(value)
    if problem is not None:
        raise _error(f"{what} {shown(value)} {problem}", for_code=for_code)
    size = len(value.encode("utf-8"))
    if printable:
        for index, char in enumerate(value):
            if unicodedata.category(char) == "Cc":
                raise _error(
                    f"{what} {shown(value)} contains the control character {char!r} "
                    f"at character {index}",
                    for_code=for_code,
                )
    if size > max_bytes:
        raise _error(
            f"{what} {shown(value)} is {size:,} bytes of UTF-8, over the limit of {max_bytes:,}",
            for_code=for_code,
        )
    return value


def check_name(value: object, what: str, *, for_code: bool = False) -> str:
    """A job name or a queue name (see ``MAX_NAME_BYTES``)."""
    return check_text(value, what, max_bytes=MAX_NAME_BYTES, for_code=for_code)


def check_key(value: object) -> str:
    """An idempotency key (see ``MAX_KEY_BYTES``)."""
    return check_text(value, "key", max_bytes=MAX_KEY_BYTES, printable=False)


def check_limit(value: object) -> int:
    """How many jobs a listing returns: an integer from 1 to ``MAX_LIST``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidOption(f"limit must be a whole number, got {type(value).__name__}")
    if not 1 <= value <= MAX_LIST:
        raise InvalidOption(f"limit must be from 1 to {MAX_LIST:,}, got {value:,}")
    return value


_DURATION = re.compile(r"(\d{1,6})(s|m|h|d)")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, what: str) -> int:
    """Seconds in a duration written as a whole number and a unit: ``90s``,
    ``5m``, ``1h``, ``7d``; ``InvalidOption`` naming ``what`` otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise InvalidOption(
            f"{what} must be a duration such as 90s, 5m, 1h or 7d, not {text!r:.40}"
        )
    return int(match.group(1)) * _UNIT[match.group(2)]
