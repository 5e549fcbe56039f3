"""Event-time parsing and formatting: integer epoch milliseconds inside, RFC 3339 on the wire.

>>> parse_event_time("2026-11-23T10:00:00.123Z")
1795428000123
>>> parse_event_time(1795428000123)
1795428000123
>>> format_ms(1795428000123)
'2026-11-23T10:00:00.123Z'
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

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
        ms = (parsed - _EPOCH) // _ONE_MS
    else:
        raise ValueError("event_time must be an RFC 3339 string or integer epoch milliseconds")
    if not MIN_MS <= ms <= MAX_MS:
        raise ValueError("event_time is outside years 1970 to 9999")
    return ms


def format_ms(ms: int) -> str:
    """Format epoch milliseconds as RFC 3339 UTC with millisecond precision."""
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DATE_TIME = r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?"
_RFC3339 = re.compile(_DATE_TIME + r"(?:[Zz]|[+-]\d{2}:\d{2})\Z")
_RFC3339_NO_OFFSET = re.compile(_DATE_TIME + r"\Z")
_ONE_MS = timedelta(milliseconds=1)
