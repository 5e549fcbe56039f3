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
:func:`parse_event_times` reads a batch's ``YYYY-MM-DDTHH:MM:SS.fffZ`` times
in a few numpy operations over all of them. Anything else takes the general
path, so the acceptance rules and every error message stay those of the
regex + ``fromisoformat`` implementation.
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


def parse_event_times(values: Sequence[int | str]) -> list[int | None]:
    """:func:`parse_event_time` of each value, or None where it raises ``ValueError``.

    A batch's 24-character strings are read together by
    :func:`_parse_wire_times` (producers send ``YYYY-MM-DDTHH:MM:SS.fffZ``);
    every value it does not prove, and every value of a batch too small to
    repay the numpy calls, goes through :func:`parse_event_time` one by one.

    >>> parse_event_times(["2026-11-23T10:00:00.123Z", 1795428000123, "x", True])
    [1795428000123, 1795428000123, None, None]
    """
    out: list[int | None] = [None] * len(values)
    if len(values) >= _BULK_MIN:
        try:
            lengths = list(map(len, values))  # type: ignore[arg-type]
        except TypeError:  # integers among them
            lengths = [len(v) if isinstance(v, str) else 0 for v in values]
        if lengths.count(_WIRE_LEN) == len(values):
            out, proven = _parse_wire_times(values)  # type: ignore[arg-type]
            if proven:
                return out
        else:
            wire = [i for i, n in enumerate(lengths) if n == _WIRE_LEN]
            if len(wire) >= _BULK_MIN:
                strings: list[str] = [values[i] for i in wire]  # type: ignore[misc]
                for i, ms in zip(wire, _parse_wire_times(strings)[0], strict=True):
                    out[i] = ms
    for i, ms in enumerate(out):
        if ms is None:
            out[i] = _parse_or_none(values[i])
    return out


def _parse_or_none(value: int | str) -> int | None:
    try:
        return parse_event_time(value)
    except ValueError:
        return None


def _parse_wire_times(values: Sequence[str]) -> tuple[list[int | None], bool]:
    """Epoch ms of each 24-character ``YYYY-MM-DDTHH:MM:SS.fffZ`` string (None: not proven),
    and whether every one was proven.

    Accepts only strings the general path accepts, and reads them the same way:
    ASCII digits where the pattern has digits (the general path's regex also
    takes other Unicode digits, which ``fromisoformat`` then rejects), its
    separators (``T`` or ``t``, ``Z`` or ``z``), a date that exists, hours to
    23, minutes and seconds to 59, years from 1970 (9999 at most in four
    digits, so every value is within ``MIN_MS`` to ``MAX_MS``).
    """
    joined = "".join(values)
    if not joined.isascii():
        return [None] * len(values), False
    codes = np.frombuffer(joined.encode("ascii"), dtype=np.uint8).reshape(-1, _WIRE_LEN)
    # Each character within its column's range (unsigned: below the range wraps above it),
    # ``T`` and ``Z`` folded to lower case first.
    ok = (((codes | _LOWER_CASE) - _LOWEST) <= _SPAN).all(axis=1)
    # The fields as linear combinations of the digits: one matrix product reads them all.
    read = (codes.astype(np.float64) @ _WEIGHTS - _WEIGHTS_OF_ZEROS).astype(np.int64).T
    year_month, month, day, hour, time_of_day = read
    at = year_month - _FIRST_YEAR_MONTH
    ok &= (at >= 0) & (month >= 1) & (month <= 12) & (hour <= 23)
    at[~ok] = 0
    ok &= (day >= 1) & (day <= _MONTH_DAYS[at])
    ms = (_MONTH_START_DAYS[at] + (day - 1)) * 86_400_000 + time_of_day
    out: list[int | None] = ms.tolist()
    if ok.all():
        return out, True
    for i in np.flatnonzero(~ok).tolist():
        out[i] = None
    return out, False


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
# parse_event_times: below this many values the per-value path is cheaper than numpy's calls.
_BULK_MIN = 16
# The wire shape ``YYYY-MM-DDTHH:MM:SS.fffZ``, as the lowest and highest byte of each
# character: digits (tens of months, days, hours, minutes and seconds no higher than
# they can be) and separators (``T`` and ``Z`` in lower case, as _LOWER_CASE folds them).
_WIRE_LEN = 24
_LOWEST = np.frombuffer(b"0000-00-00t00:00:00.000z", dtype=np.uint8)
_SPAN = np.frombuffer(b"9999-19-39t29:59:59.999z", dtype=np.uint8) - _LOWEST
_LOWER_CASE = np.zeros(_WIRE_LEN, dtype=np.uint8)
_LOWER_CASE[[10, 23]] = 0x20  # only "T" and "t" (or "Z" and "z") end as "t" ("z")
# The fields read, each a weighted sum of digits: year * 12 + month, month, day,
# hour, and the milliseconds into the day.
_WEIGHTS = np.zeros((_WIRE_LEN, 5), dtype=np.float64)
_PLACES = (
    {0: 12_000, 1: 1_200, 2: 120, 3: 12, 5: 10, 6: 1},
    {5: 10, 6: 1},
    {8: 10, 9: 1},
    {11: 10, 12: 1},
    {11: 36_000_000, 12: 3_600_000, 14: 600_000, 15: 60_000, 17: 10_000, 18: 1_000},
)
for _field, _places in enumerate(_PLACES):
    for _pos, _weight in _places.items():
        _WEIGHTS[_pos, _field] = _weight
_WEIGHTS[[20, 21, 22], 4] = (100, 10, 1)
_WEIGHTS_OF_ZEROS = ord("0") * _WEIGHTS.sum(axis=0)
# Per month from January 1970 to December 9999: its length in days, and the days
# from the epoch to its first day.
_FIRST_YEAR_MONTH = 1970 * 12 + 1
_YEARS = np.arange(1970, 10_000)
_LEAP = (_YEARS % 4 == 0) & ((_YEARS % 100 != 0) | (_YEARS % 400 == 0))
_MONTH_DAYS = (
    np.tile(np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]), len(_YEARS))
    + np.outer(_LEAP, np.arange(1, 13) == 2).ravel()
)
_MONTH_START_DAYS = np.concatenate([[0], np.cumsum(_MONTH_DAYS)[:-1]])
