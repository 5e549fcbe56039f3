"""Records filled from orjson's columns against ``orjson.dumps`` of each record's dict.

The oracle is the contract's reading: a record is ``orjson.dumps`` of its dict.
Values are what a cut on separators could get wrong: strings holding quotes,
backslashes (one ending a string, before its closing quote), commas, brackets,
control characters and non-ASCII text, and every kind of JSON scalar.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.json_fill import ColumnCountError, compile_kernel, fill

# Any text orjson writes: every code point but the surrogates, which it refuses.
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    TEXT,
)
TRICKY = ['"', "\\", '\\"', "a\\", '","', "],[", "]", ",", "\n\x00\x1f", "é€😀", "%b%s", ""]


def _dicts(names: list[str], width: int, rows: list[tuple[Any, ...]]) -> list[bytes]:
    """``orjson.dumps`` of each row's record: its fields, then any ``width`` values under "v"."""
    records = []
    for row in rows:
        fields = dict(zip(names, row[: len(names)], strict=True))
        if width:
            fields["v"] = {f"v{i}": x for i, x in enumerate(row[len(names) :])}
        records.append(orjson.dumps(fields))
    return records


def _filled(names: list[str], width: int, rows: list[tuple[Any, ...]]) -> list[bytes]:
    """The same records from one column per field and one row-major column of the "v" values."""
    template = [(b"," if i else b"{") + orjson.dumps(name) + b":" for i, name in enumerate(names)]
    template += [(b"," if i else b',"v":{') + orjson.dumps(f"v{i}") + b":" for i in range(width)]
    template.append(b"}}" if width else b"}")
    columns = [orjson.dumps([row[i] for row in rows]) for i in range(len(names))]
    columns.append(orjson.dumps([x for row in rows for x in row[len(names) :]]))
    slots = [*range(len(names)), *[len(names)] * width]
    return fill(template, columns, slots, len(rows))


def setup_module() -> None:
    compile_kernel()


@st.composite
def _cases(draw: st.DrawFn) -> tuple[int, int, list[tuple[Any, ...]]]:
    fields = draw(st.integers(min_value=1, max_value=4))
    width = draw(st.integers(min_value=0, max_value=5))
    rows = draw(st.lists(st.tuples(*[SCALARS] * (fields + width)), min_size=1, max_size=8))
    return fields, width, rows


@settings(max_examples=200, deadline=None)
@given(_cases())
def test_records_are_orjson_dumps_of_their_dicts(
    case: tuple[int, int, list[tuple[Any, ...]]],
) -> None:
    fields, width, rows = case
    names = [f"f{i}" for i in range(fields)]
    assert _filled(names, width, rows) == _dicts(names, width, rows)


def test_strings_with_separators_escapes_and_odd_text() -> None:
    rows = [(a, b, c) for a in TRICKY for b in TRICKY[:3] for c in (TRICKY[-1], 1.5, None)]
    names = ["a", "b", "c"]
    assert _filled(names, 0, rows) == _dicts(names, 0, rows)
    # Odd field names and a % in the template are written as they are.
    assert fill([b'{"%b":', b"}"], [orjson.dumps(TRICKY)], [0], len(TRICKY)) == [
        orjson.dumps({"%b": s}) for s in TRICKY
    ]


def test_float_arrays_as_orjson_serialises_them() -> None:
    values = np.array([0.1, -0.0, 5e-324, 1e16, np.nan, np.inf, 3.0], dtype=np.float64)
    column = orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)
    got = fill([b"[", b"]"], [column], [0], len(values))
    assert got == [orjson.dumps([v]) for v in values.tolist()]


@pytest.mark.parametrize(
    ("columns", "slots", "n"),
    [
        ([b"[1,2]"], [0], 3),  # too few values
        ([b"[1,2,3]"], [0], 2),  # too many
        ([b'["a","b"]', b"[1]"], [0, 1], 2),  # one of two columns short
        ([b"[1,2,3]"], [0, 0], 2),  # a shared column short of a row's values
        ([b"[]"], [0], 1),
        ([b'["a"]', b"[1]"], [0], 1),  # a column no slot takes
        ([b"[1]"], [0], 0),  # values for no records
    ],
)
def test_a_column_that_does_not_match_its_slots_is_refused(
    columns: list[bytes], slots: list[int], n: int
) -> None:
    template = [b"<"] + [b"|"] * (len(slots) - 1) + [b">"]
    with pytest.raises(ColumnCountError):
        fill(template, columns, slots, n)


def test_a_template_must_have_one_fragment_more_than_slots() -> None:
    with pytest.raises(ValueError, match="fragments"):
        fill([b"a"], [b"[1]"], [0], 1)
    assert fill([b"<", b">"], [b"[]"], [0], 0) == []
    assert fill([b"<", b">"], [b"[1]", b"[]"], [0], 1) == [b"<1>"]  # an empty column no slot takes
