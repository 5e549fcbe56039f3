"""Numba kernels of the drift monitor: the window's ring, its bin counts, its statistics.

:mod:`operators.drift` owns the rules (window, cadence, flags) and the state;
these kernels do its per-row and per-emission arithmetic. Every signal's
reference bins sit side by side in one array of counts (signal ``j``'s bins
from ``bounds[j]`` to ``bounds[j + 1]``); each value's bin (its index in that
array) is kept beside it in the ring, so a row entering the window adds its
bins' counts and the row it overwrites takes its own away: integers, so the
counts are always exactly a count of the window.

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
def _bin(v: float, edges: Any, lo: int, hi: int) -> int:
    """``np.searchsorted(edges[lo:hi], v, side="right")``, numpy's NaN order included."""
    start = lo
    while lo < hi:
        mid = (lo + hi) >> 1
        e = edges[mid]
        # numpy's "less than" for floats: NaN sorts after every number.
        if v < e or (e != e and v == v):
            hi = mid
        else:
            lo = mid + 1
    return lo - start


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
    ring_bins: Any,
    counts: Any,
    pos: int,
    filled: int,
) -> None:
    """Rows ``lo`` to ``hi`` into the ring from slot ``pos`` on (wrapping), binned and counted.

    Signal ``j`` of row ``r`` is ``values[r, cols[j]]``, the last signal ``scores[r]``.
    A slot below ``filled`` holds a row already: its bins leave the counts. At most
    the ring's size of rows, so no slot is written twice.
    """
    size, width = ring.shape
    last = width - 1
    s = pos
    for r in range(lo, hi):
        if s < filled:
            for j in range(width):
                counts[ring_bins[s, j]] -= 1
        for j in range(width):
            v = values[r, cols[j]] if j < last else scores[r]
            b = bounds[j] + _bin(v, edges, edge_bounds[j], edge_bounds[j + 1])
            ring[s, j] = v
            ring_bins[s, j] = b
            counts[b] += 1
        ring_times[s] = times[r]
        s += 1
        if s == size:
            s = 0


def _recount(
    ring: Any, filled: int, edges: Any, bounds: Any, edge_bounds: Any, ring_bins: Any, counts: Any
) -> None:
    """Bin the ring's first ``filled`` rows into ``ring_bins`` and count them into ``counts``."""
    counts[:] = 0
    for s in range(filled):
        for j in range(ring.shape[1]):
            b = bounds[j] + _bin(ring[s, j], edges, edge_bounds[j], edge_bounds[j + 1])
            ring_bins[s, j] = b
            counts[b] += 1


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
_I2 = types.Array(types.int64, 2, "C")
_INT = types.int64
SIGNATURES = (
    (
        enter,
        types.none(_F2, _I1, _F1, _I1, _INT, _INT, _F1, _I1, _I1, _F2, _I1, _I2, _I1, _INT, _INT),
    ),
    (recount, types.none(_F2, _INT, _F1, _I1, _I1, _I2, _I1)),
    (window_stats, types.none(_F2, _INT, _F1, _F1, _F1, _F1, _F1, _I1, _F1, _F1, _F1, _F1)),
)


def compile_kernels() -> None:
    """Compile (or load from numba's cache) the kernels for the types the monitor passes."""
    compile_each(SIGNATURES)
