"""Numba kernel of the merchant windows: one call per run of a batch's rows between other steps.

:mod:`operators.merchant_windows` owns the rules (windows, lateness, purging)
and the state; this module applies them to a run of rows in order. The
engine numbers the batch's windows (each row's own and previous window, each
chargeback's) and passes their transaction and chargeback counts as arrays,
indexed by that number. Each row reads its previous window's counts as the
rows before it (and the chargebacks the engine counted before the run) left
them, then counts itself in its own window unless it is late. The exact
amount sums stay with the engine: their order does not change them.

The kernel compiles once per process, at :func:`compile_kernel` (the engine's
construction); numba caches the machine code on disk as it does
:mod:`operators.card_kernel`'s.

Time rules and state: none of its own.
"""

from __future__ import annotations

from typing import Any

from numba import types

from operators.numba_cache import compile_each, jit


def _merchant_run(
    own: Any,
    prev: Any,
    accept: Any,
    starts: Any,
    horizons: Any,
    txns: Any,
    cbs: Any,
    touched: Any,
    counts: Any,
    rates: Any,
    lo: int,
    hi: int,
    step: int,
) -> None:
    """Rows ``lo`` to ``hi``: their merchant features into ``counts`` and ``rates``; their counts.

    ``prev[r]`` is -1 where row ``r`` has no previous window; a previous window
    starting at or before ``horizons[r]`` is purged as of the row. Row ``r`` is
    step ``r + step`` of the batch: ``touched`` takes the first step that counts
    in each window (still -1 for windows nothing counted in yet).
    """
    for r in range(lo, hi):
        p = prev[r]
        if p >= 0 and starts[r] > horizons[r]:
            count = txns[p]
            counts[r] = count
            rates[r] = cbs[p] / max(1, count)
        else:
            counts[r] = 0.0
            rates[r] = 0.0
        if accept[r]:
            c = own[r]
            txns[c] += 1
            if touched[c] < 0:
                touched[c] = r + step


merchant_run = jit(_merchant_run)

_INTS = types.Array(types.int64, 1, "C")
_FLOATS = types.Array(types.float64, 1, "C")
_SIGNATURE = types.none(
    _INTS,
    _INTS,
    types.Array(types.boolean, 1, "C"),
    _INTS,
    _INTS,
    _INTS,
    _INTS,
    _INTS,
    _FLOATS,
    _FLOATS,
    types.int64,
    types.int64,
    types.int64,
)


def compile_kernel() -> None:
    """Compile (or load from numba's cache) the kernel for the types the engine passes."""
    compile_each([(merchant_run, _SIGNATURE)])
