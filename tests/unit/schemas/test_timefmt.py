"""The fast paths of ``schemas.timefmt`` agree with its general paths on every input."""

from __future__ import annotations

import re
from collections.abc import Sequence
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
    parse_event_times,
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


def _each(values: Sequence[int | str]) -> list[int | None]:
    out: list[int | None] = []
    for value in values:
        try:
            out.append(parse_event_time(value))
        except ValueError:
            out.append(None)
    return out


@given(st.lists(st.tuples(_WIRE, _EDITS), min_size=0, max_size=40), st.lists(st.integers()))
def test_parsing_a_batch_is_parsing_each_value(
    edited: list[tuple[str, list[tuple[int, str]]]], integers: list[int]
) -> None:
    texts: list[int | str] = []
    for text, edits in edited:
        for pos, char in edits:
            text = text[:pos] + char + text[pos + 1 :]
        texts.append(text)
    batches: list[list[int | str]] = [
        texts,
        [*texts, *integers],
        [*integers, *texts, "x" * 24, True],
    ]
    for values in batches:
        got = parse_event_times(values)
        assert got == _each(values)
        assert all(type(ms) in (int, type(None)) for ms in got)


@pytest.mark.parametrize("separators", ["TZ", "tz", "Tz", "tZ"])
def test_a_batch_reads_every_day_and_month_end_as_the_general_path(separators: str) -> None:
    # Every day of 1970 to 2104 and of a few later centuries, at a time of day that
    # uses every digit; days 29 to 32 of every month and times of day, real or not.
    t, z = separators[0], separators[1]
    days = [*range(0, 49_000), *range(2_900_000, 2_901_000), 2_932_896]
    texts: list[int | str] = [
        format_ms(d * 86_400_000 + 83_759_987).replace("T", t).replace("Z", z) for d in days
    ]
    texts += [
        f"{year:04d}-{month:02d}-{day:02d}{t}10:00:00.000{z}"
        for year in (1969, 1970, 1972, 2000, 2023, 2024, 2100, 2400, 9999)
        for month in range(0, 14)
        for day in (0, 1, 28, 29, 30, 31, 32)
    ]
    texts += [
        f"2024-02-29{t}{hour:02d}:{minute:02d}:{second:02d}.999{z}"
        for hour in (0, 9, 10, 19, 20, 23, 24, 29, 30, 99)
        for minute in (0, 9, 59, 60, 99)
        for second in (0, 9, 59, 60, 99)
    ]
    assert parse_event_times(texts) == _each(texts)
    assert sum(ms is not None for ms in parse_event_times(texts)) > len(days)


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
