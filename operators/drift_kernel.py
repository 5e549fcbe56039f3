"""Numba kernels of the drift monitor: the window's ring, its bin counts, its statistics.

:mod:`operators.drift` owns the rules (window, cadence, flags) and the state;
these kernels do its per-row and per-emission arithmetic. Every signal's
reference bins sit side by side in one array of counts (signal ``j``'s bins
from ``bounds[j]`` to ``bounds[j + 1]``); rows entering the window add their
values' counts and the rows they overwrite take theirs away: integers, so the
counts are always exactly a count of the window. A value's bin is
``np.searchsorted(edges, value, side="right")`` on its signal's reference
edges, which are sorted (quantiles), as ``searchsorted`` requires.

The statistics are the bits numpy gives: a mean is numpy's pairwise sum of
the column in ring order (:func:`_pairwise`, the same blocks, accumulators
and order as numpy's ``add.reduce`` over contiguous ``float64``) divided by
the count; a PSI the same pairwise sum of its terms; a KS gap runs the
cumulative sum in order, as ``np.cumsum`` does. The logarithm stays with
numpy (its SIMD ``log`` need not round as the C library's does).

The kernels compile once per process, at :func:`compile_kernels` (the flow's
construction); numba caches the machine code on disk as it does
:mod:`operators.card_kernel`'s.

Time rules and state: none of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit, types

from operators.numba_cache import compile_each, jit

# numpy's pairwise summation: blocks of at most this many values are summed with
# eight accumulators (numpy's PW_BLOCKSIZE), shorter than eight sequentially.
_BLOCK = 128

# Helpers are only called from other kernels: no CPython or C entry points to build.
_HELPER: dict[str, Any] = {"no_cpython_wrapper": True, "no_cfunc_wrapper": True}


def _helper(fn: Callable[..., Any]) -> Any:
    return njit(**_HELPER)(fn)


@_helper
def _count_column(x: Any, edges: Any, lo: int, hi: int, counts: Any, base: int, sign: int) -> None:
    """Add ``sign`` times the count of ``x``'s values in each bin of the sorted ``edges[lo:hi]``
    (bin ``k`` of a value: ``np.searchsorted(edges[lo:hi], value, side="right")``, numpy's
    NaN order included) to ``counts[base:]``.

    A value's bin is the number of edges it is not below, so the values not below
    edge ``k - 1`` but below edge ``k`` are bin ``k``: integer sums over the whole
    column, edge by edge, with no branch to mispredict and no chain of increments
    of one count, and the loop over the column vectorizes.
    """
    n = len(x)
    above = n  # values not below the previous edge
    for k in range(lo, hi):
        e = edges[k]
        count = 0
        if e != e:  # only NaN is not below a NaN edge
            for i in range(n):
                count += x[i] != x[i]
        else:
            for i in range(n):
                count += not (x[i] < e)
        counts[base + k - lo] += sign * (above - count)
        above = count
    counts[base + hi - lo] += sign * above


@_helper
def _pairwise(a: Any) -> float:
    """numpy's pairwise sum of the 1-d array (or view) ``a``, without its initial 0.0."""
    n = len(a)
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[i]
        return res
    if n <= _BLOCK:
        r0, r1, r2, r3, r4, r5, r6, r7 = a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]
        i = 8
        end = n - n % 8
        while i < end:
            r0 += a[i]
            r1 += a[i + 1]
            r2 += a[i + 2]
            r3 += a[i + 3]
            r4 += a[i + 4]
            r5 += a[i + 5]
            r6 += a[i + 6]
            r7 += a[i + 7]
            i += 8
        total: float = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            total += a[i]
            i += 1
        return total
    half = n // 2
    half -= half % 8
    left: float = _pairwise(a[:half])
    right: float = _pairwise(a[half:])
    return left + right


def _enter(
    values: Any,
    cols: Any,
    scores: Any,
    times: Any,
    lo: int,
    hi: int,
    edges: Any,
    bounds: Any,
    edge_bounds: Any,
    ring: Any,
    ring_times: Any,
    counts: Any,
    pos: int,
    filled: int,
) -> None:
    """Rows ``lo`` to ``hi`` into the ring from slot ``pos`` on (wrapping), counted in their bins.

    Signal ``j`` of row ``r`` is ``values[r, cols[j]]``, the last signal ``scores[r]``.
    A slot below ``filled`` holds a row already: its values leave the counts. At
    most the ring's size of rows, so no slot is written twice.
    """
    size, width = ring.shape
    n = hi - lo
    slots = np.empty(n, dtype=np.int64)
    s = pos
    for i in range(n):
        slots[i] = s
        ring_times[s] = times[lo + i]
        s = s + 1 if s + 1 < size else 0
    x = np.empty(n, dtype=np.float64)
    gone = np.empty(n, dtype=np.float64)
    for j in range(width):
        if j < width - 1:
            col = cols[j]
            for i in range(n):
                x[i] = values[lo + i, col]
        else:
            for i in range(n):
                x[i] = scores[lo + i]
        left = 0
        for i in range(n):
            s = slots[i]
            if s < filled:
                gone[left] = ring[s, j]
                left += 1
            ring[s, j] = x[i]
        first, last = edge_bounds[j], edge_bounds[j + 1]
        _count_column(x, edges, first, last, counts, bounds[j], 1)
        _count_column(gone[:left], edges, first, last, counts, bounds[j], -1)


def _recount(
    ring: Any, filled: int, edges: Any, bounds: Any, edge_bounds: Any, counts: Any
) -> None:
    """Count the ring's first ``filled`` rows into ``counts`` (zeroed first)."""
    counts[:] = 0
    for j in range(ring.shape[1]):
        column = ring[:filled, j].copy()
        _count_column(column, edges, edge_bounds[j], edge_bounds[j + 1], counts, bounds[j], 1)


def _window_stats(
    ring: Any,
    filled: int,
    observed: Any,
    floored: Any,
    floored_obs: Any,
    logs: Any,
    cdf: Any,
    bounds: Any,
    terms: Any,
    means: Any,
    psis: Any,
    kss: Any,
) -> None:
    """Each signal's mean, PSI and KS into ``means``, ``psis``, ``kss``.

    ``observed`` is the window's proportion in each bin, ``floored_obs`` that at
    least the floor, ``floored`` the reference's floored proportions, ``logs``
    ``np.log(floored_obs / floored)``, ``cdf`` each reference's cumulative
    proportions; ``terms`` is scratch.
    """
    width = ring.shape[1]
    for k in range(len(terms)):
        terms[k] = (floored_obs[k] - floored[k]) * logs[k]
    for j in range(width):
        # numpy's add.reduce starts from its identity, 0.0.
        means[j] = (0.0 + _pairwise(ring[:filled, j])) / filled
        a, b = bounds[j], bounds[j + 1]
        psis[j] = 0.0 + _pairwise(terms[a:b])
        running = 0.0
        gap = 0.0
        for k in range(a, b):
            running = observed[k] if k == a else running + observed[k]
            d = abs(running - cdf[k])
            if d > gap or d != d:  # a NaN stays, as np.max keeps one
                gap = d
        kss[j] = gap


enter = jit(_enter)
recount = jit(_recount)
window_stats = jit(_window_stats)

_F1 = types.Array(types.float64, 1, "C")
_F2 = types.Array(types.float64, 2, "C")
_I1 = types.Array(types.int64, 1, "C")
_INT = types.int64
SIGNATURES = (
    (
        enter,
        types.none(_F2, _I1, _F1, _I1, _INT, _INT, _F1, _I1, _I1, _F2, _I1, _I1, _INT, _INT),
    ),
    (recount, types.none(_F2, _INT, _F1, _I1, _I1, _I1)),
    (window_stats, types.none(_F2, _INT, _F1, _F1, _F1, _F1, _F1, _I1, _F1, _F1, _F1, _F1)),
)


def compile_kernels() -> None:
    """Compile (or load from numba's cache) the kernels for the types the monitor passes."""
    compile_each(SIGNATURES)
