"""JSON records from a template and columns that orjson serialised, in one numba pass.

A record is its template's fragments with one value between each two: value
slot ``s`` takes the next value of column ``slots[s]``. A column is orjson's
output for a list (or a 1-d array) of the values it gives, in the order the
slots take them: its values are JSON elements, cut where an element ends, so
each is written with exactly the bytes orjson gave it. A column that several
slots share gives its values row-major (a table's rows, flattened). Values
are strings and scalars, never arrays or objects: a JSON string ends at its
first quote not escaped by a backslash, any other element (a number, ``true``,
``false``, ``null``) at the next comma or ``]``.

The kernel reads only inside each column's serialised bytes and checks that
every column gives exactly the values the slots take; it writes into a buffer
sized for the worst case, the columns' bytes plus the fragments of every
record, and Python cuts the records from it where the kernel says each ends.

The kernel compiles once per process at :func:`compile_kernel` (the score
step's construction); numba caches the machine code on disk as it does
:mod:`operators.card_kernel`'s.

Time rules and state: none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from operators.numba_cache import compile_each, jit

QUOTE, BACKSLASH, COMMA, OPEN = b'"'[0], b"\\"[0], b","[0], b"["[0]


class ColumnCountError(ValueError):
    """A column gives more or fewer values than the template's slots take from it."""


def _copy_typing(typingctx: Any, dst: Any, at: Any, src: Any, start: Any, count: Any) -> Any:
    """``dst[at:at + count] = src[start:start + count]`` as one ``memcpy``.

    A numba slice assignment copies byte by byte; the records' pieces are a few
    to a few dozen bytes, and a call to ``memcpy`` moves them several times faster.
    """
    signature = types.void(dst, at, src, start, count)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        out, at, data, start, count = args
        out_array = context.make_array(sig.args[0])(context, builder, out)
        data_array = context.make_array(sig.args[2])(context, builder, data)
        cgutils.raw_memcpy(  # type: ignore[no-untyped-call]
            builder,
            builder.gep(out_array.data, [at]),
            builder.gep(data_array.data, [start]),
            count,
            1,
        )
        return context.get_dummy_value()

    return signature, codegen


_copy: Any = intrinsic(_copy_typing)


@jit
def _fill(
    fragments: Any,
    fragment_ends: Any,
    src: Any,
    column_ends: Any,
    slots: Any,
    out: Any,
    ends: Any,
) -> bool:
    """Write every record into ``out``, each one's end into ``ends``; False if a count is off.

    ``src`` holds the columns one after another, column ``c`` ending at
    ``column_ends[c]``; ``fragment_ends`` are the template's fragments' ends in
    ``fragments``.
    """
    columns = len(column_ends)
    # Each column's cursor: its last separator read ('[' or ',').
    cursor = np.empty(columns, np.int64)
    cursor[0] = 0
    cursor[1:] = column_ends[:-1]
    k = len(slots)
    at = 0
    for row in range(len(ends)):
        begin = 0
        for s in range(k + 1):
            end = fragment_ends[s]
            _copy(out, at, fragments, begin, end - begin)
            at += end - begin
            begin = end
            if s == k:
                break
            c = slots[s]
            start = cursor[c] + 1
            stop = column_ends[c] - 1  # the column's closing ']'
            if start >= stop:
                return False
            e = start
            if src[e] == QUOTE:
                e += 1
                while e < stop and src[e] != QUOTE:
                    e += 2 if src[e] == BACKSLASH else 1
                e += 1
            else:
                while e < stop and src[e] != COMMA:
                    e += 1
            _copy(out, at, src, start, e - start)
            at += e - start
            cursor[c] = e
        ends[row] = at
    for c in range(columns):
        last = column_ends[c] - 1  # the column's closing ']'
        # Every value taken: at the ']', or still at the '[' of an empty column.
        if cursor[c] != last and not (cursor[c] == last - 1 and src[cursor[c]] == OPEN):
            return False
    return True


_BYTES = types.Array(types.uint8, 1, "C", readonly=True)
_INTS = types.Array(types.int64, 1, "C")
_SIGNATURE = types.boolean(
    _BYTES, _INTS, _BYTES, _INTS, _INTS, types.Array(types.uint8, 1, "C"), _INTS
)


def compile_kernel() -> None:
    """Compile (or load from numba's cache) the kernel for the types :func:`fill` passes."""
    compile_each([(_fill, _SIGNATURE)])


def fill(
    template: Sequence[bytes], columns: Sequence[bytes], slots: Sequence[int], n: int
) -> list[bytes]:
    """``n`` records: fragment ``s`` of ``template``, then column ``slots[s]``'s next value.

    ``len(template) == len(slots) + 1``; each column is ``orjson.dumps`` of a
    list or 1-d array. Raises :class:`ColumnCountError` unless each column
    holds ``n`` values for each slot that takes from it.
    """
    if len(template) != len(slots) + 1:
        raise ValueError(f"{len(template)} fragments for {len(slots)} slots")
    if not n:
        if any(len(column) > 2 for column in columns):
            raise ColumnCountError("values for no records")
        return []
    data = b"".join(columns)
    fragments = b"".join(template)
    fragment_ends = np.cumsum([len(f) for f in template], dtype=np.int64)
    column_ends = np.cumsum([len(c) for c in columns], dtype=np.int64)
    # No value is longer than its column's bytes, so this holds every record.
    out = np.empty(len(data) + n * len(fragments), np.uint8)
    ends = np.empty(n, np.int64)
    ok = _fill(
        np.frombuffer(fragments, np.uint8),
        fragment_ends,
        np.frombuffer(data, np.uint8),
        column_ends,
        np.asarray(slots, dtype=np.int64),
        out,
        ends,
    )
    if not ok:
        raise ColumnCountError("a column's values do not match the slots that take them")
    records = out[: ends[-1]].tobytes()
    stops = ends.tolist()
    return list(map(records.__getitem__, map(slice, [0, *stops[:-1]], stops)))
