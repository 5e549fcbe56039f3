"""The fast paths of ``schemas.timefmt`` agree with its general paths on every input."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.timefmt import (
    _FAST_FORMAT_END_MS,
    MAX_MS,
    _parse_common,
    _parse_rfc3339,
    format_ms,
    parse_event_time,
)

# Mutations of well-formed times: what producers send, and what they get wrong.
_WIRE = st.sampled_from(
    [
        "2026-11-23T10:00:00.123Z",
        "2026-11-23t10:00:00.123z",
        "1970-01-01T00:00:00Z",
        "2024-02-29T23:59:59.999Z",
        "2023-02-29T10:00:00.000Z",
        "9999-12-31T23:59:59.999Z",
        "0000-01-01T00:00:00.000Z",
    ]
)
_EDITS = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=23),
        st.sampled_from(["0", "5", "9", "-", ":", ".", "T", "Z", " ", "+", "\u0663", ""]),
    ),
    max_size=3,
)


def _general(text: str) -> int | str:
    try:
        return _parse_rfc3339(text)
    except ValueError as exc:
        return str(exc)


@given(_WIRE, _EDITS)
def test_fast_parse_returns_only_what_the_general_path_returns(
    text: str, edits: list[tuple[int, str]]
) -> None:
    for pos, char in edits:
        text = text[:pos] + char + text[pos + 1 :]
    fast = _parse_common(text)
    if fast is not None:
        assert _general(text) == fast


@given(st.integers(min_value=0, max_value=_FAST_FORMAT_END_MS + 10_000))
def test_fast_format_matches_strftime(ms: int) -> None:
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    assert format_ms(ms) == dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("2026-11-23T24:00:00.000Z", "event_time is not RFC 3339: '2026-11-23T24:00:00.000Z'"),
        ("2026-11-23T10:00:60.000Z", "event_time is not RFC 3339: '2026-11-23T10:00:60.000Z'"),
        ("2026-11-23T10:00:00.000", "event_time has no UTC offset"),
        # The regex's \\d takes any Unicode digit; fromisoformat does not.
        (
            "2026-11-23T10:00:0\u0663.000Z",
            "event_time is not RFC 3339: '2026-11-23T10:00:0\u0663.000Z'",
        ),
    ],
)
def test_rejections_keep_their_messages(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        parse_event_time(text)


def test_both_paths_cover_the_whole_range() -> None:
    assert parse_event_time(format_ms(MAX_MS)) == MAX_MS
    assert parse_event_time("1970-01-01T00:00:00.000Z") == 0
