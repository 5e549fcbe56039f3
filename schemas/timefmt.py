"""Event-time parsing and formatting: integer epoch milliseconds inside, RFC 3339 on the wire.

>>> parse_event_time("2026-11-23T10:00:00.123Z")
1795428000123
>>> parse_event_time(1795428000123)
1795428000123
>>> format_ms(1795428000123)
'2026-11-23T10:00:00.123Z'

Both directions run per record, so each has a fast path for the shapes seen
on the wire (ASCII ``YYYY-MM-DDTHH:MM:SS[.fff]Z``; times between 1970 and
2100) that returns only what the general path would return,
with the calendar work cached per minute (parsing) or per second (formatting).
Anything else takes the general path, so the acceptance rules and every error
message stay those of the regex + ``fromisoformat`` implementation.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import numpy as np

# Years 1970 to 9999: anything outside is not a plausible card transaction time.
MIN_MS = 0
MAX_MS = 253_402_300_799_999


def parse_event_time(value: object) -> int:
    """Return epoch milliseconds for an RFC 3339 string with an offset or an integer of ms."""
    if isinstance(value, bool):
        raise ValueError("event_time must be an RFC 3339 string or integer epoch milliseconds")
    if isinstance(value, int):
        ms = value
    elif isinstance(value, str):
        fast = _parse_common(value)
        ms = _parse_rfc3339(value) if fast is None else fast
    else:
        raise ValueError("event_time must be an RFC 3339 string or integer epoch milliseconds")
    if not MIN_MS <= ms <= MAX_MS:
        raise ValueError("event_time is outside years 1970 to 9999")
    return ms


def format_ms(ms: int) -> str:
    """Format epoch milliseconds as RFC 3339 UTC with millisecond precision."""
    if 0 <= ms < _FAST_FORMAT_END_MS:
        return f"{_second_prefix(ms // 1000)}{ms % 1000:03d}Z"
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def format_ms_many(values: Sequence[int]) -> list[str]:
    """:func:`format_ms` of each value, the calendar work done once per distinct second.

    >>> format_ms_many([1795428000123, 1795428000999, 0])
    ['2026-11-23T10:00:00.123Z', '2026-11-23T10:00:00.999Z', '1970-01-01T00:00:00.000Z']
    """
    if not values or min(values) < 0 or max(values) >= _FAST_FORMAT_END_MS:
        return [format_ms(ms) for ms in values]
    ms = np.asarray(values, dtype=np.int64)
    seconds, at = np.unique(ms // 1000, return_inverse=True)
    prefixes = np.array([_second_prefix(s) for s in seconds.tolist()], dtype=object)
    return list(prefixes[at] + _MILLIS[ms % 1000])


def _parse_rfc3339(value: str) -> int:
    """The general path: the regex decides what is RFC 3339, ``fromisoformat`` the calendar."""
    if not _RFC3339.match(value):
        if _RFC3339_NO_OFFSET.match(value):
            raise ValueError("event_time has no UTC offset")
        raise ValueError(f"event_time is not an RFC 3339 date-time: {value!r}")
    try:
        # RFC 3339 allows lower-case "t" and "z"; fromisoformat does not.
        parsed = datetime.fromisoformat(value.upper())
    except ValueError:
        raise ValueError(f"event_time is not RFC 3339: {value!r}") from None
    if parsed.tzinfo is None:
        raise ValueError("event_time has no UTC offset")
    return (parsed - _EPOCH) // _ONE_MS


def _parse_common(s: str) -> int | None:
    """Epoch ms of ``YYYY-MM-DDTHH:MM:SS[.fff]Z`` (ASCII, valid); None: take the general path.

    Accepts only strings the general path accepts, and reads them the same way.
    """
    n = len(s)
    if n == 24:
        if s[19] != "." or s[23] not in "Zz":
            return None
        digits = s[17:19] + s[20:23]
    elif n == 20:
        if s[19] not in "Zz":
            return None
        digits = s[17:19] + "000"
    else:
        return None
    # Five ASCII digits, seconds first: at most "59999" means at most 59 seconds.
    if s[16] != ":" or not (digits.isascii() and digits.isdigit()) or digits > "59999":
        return None
    base = _minute_ms(s[:16])
    return None if base is None else base + int(digits)


@lru_cache(maxsize=4096)
def _minute_ms(prefix: str) -> int | None:
    """Epoch ms of ``YYYY-MM-DDTHH:MM`` (ASCII, a real date and time); None otherwise."""
    if (
        not prefix.isascii()
        or prefix[4] != "-"
        or prefix[7] != "-"
        or prefix[10] not in "Tt"
        or prefix[13] != ":"
        or not (prefix[:4] + prefix[5:7] + prefix[8:10] + prefix[11:13] + prefix[14:]).isdigit()
    ):
        return None
    try:
        dt = datetime(
            int(prefix[:4]),
            int(prefix[5:7]),
            int(prefix[8:10]),
            int(prefix[11:13]),
            int(prefix[14:16]),
            tzinfo=UTC,
        )
    except ValueError:
        return None
    return (dt - _EPOCH) // _ONE_MS


@lru_cache(maxsize=4096)
def _second_prefix(seconds: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS.`` of a whole second since the epoch."""
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Below 2100 the general path's float seconds are exact to the microsecond, so the
# fast path's integer arithmetic formats every millisecond the same way.
_FAST_FORMAT_END_MS = 4_102_444_800_000
_MILLIS = np.array([f"{ms:03d}Z" for ms in range(1000)], dtype=object)
_DATE_TIME = r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?"
_RFC3339 = re.compile(_DATE_TIME + r"(?:[Zz]|[+-]\d{2}:\d{2})\Z")
_RFC3339_NO_OFFSET = re.compile(_DATE_TIME + r"\Z")
_ONE_MS = timedelta(milliseconds=1)
