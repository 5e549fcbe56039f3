"""Numba kernels of the card windows: one call per run of a batch's rows over its cards' state.

:mod:`operators.card_features` owns the rules (windows, sessions, lateness,
retention); this module computes them. A card's accepted events and session
summaries live in one ``int64`` buffer:

``[n, cap, ns, cap_s, dirty, used, times[cap], amounts[cap], merchants[cap], keys[cap],
sessions[3 * cap_s]]``

``n`` events sorted by (time, amount, merchant, event id), amounts stored as the
bits of their ``float64``, merchants as the engine's interned codes, keys as the
``hash`` of their event ids (equal keys are where a duplicate may be); ``ns``
session summaries ``(start, end, count)``, sorted and disjoint. The slots past
``n`` and ``ns`` are spare room for accepted events. ``dirty`` is 1 once the card
accepted an event its stored copy lacks (the engine clears it when it writes the
card), ``used`` the engine's count of the last batch that used the card: the
kernels keep both, so the engine need not look up every card of a batch in a set
of changed cards nor reorder its cache per batch.

:func:`card_run` takes a whole batch in one call: passing the batch's buffers as
a list would unbox each array (a microsecond or more apiece), so it takes their
data addresses (:func:`address`, read once per buffer) and views each buffer
there. The engine keeps every buffer it passes alive and never moves one during
a call; the kernels never grow a buffer, they stop and leave the row to the
engine, which gives cards room before the call (:func:`short_of_room`,
:func:`grown`).

Sums are exactly rounded: :func:`_fsum_add` and :func:`_fsum_total` are
CPython's ``math.fsum`` (Shewchuk's partials and its half-even fix-up) step for
step, so every sum has the bits ``math.fsum`` gives. Amounts are finite and at
most 1e9 (the contract), so neither they, nor their squared deviations, nor any
partial sum can overflow, and ``fsum``'s handling of infinities is left out.

The kernels compile once per process, at :func:`compile_kernels` (the engine's
construction), for the one signature the engine calls them with; numba caches
the machine code on disk (beside this file, or under ``NUMBA_CACHE_DIR`` or the
user's cache directory where this file's directory is read-only), and where no
cache directory is writable they compile in memory every start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from llvmlite import ir  # type: ignore[import-untyped]
from numba import njit, types
from numba.extending import intrinsic
from numba.np.numpy_support import carray

from operators.numba_cache import compile_each, jit

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
# Header slots of a card buffer, and its per-event columns (times, amounts, merchants, keys).
N, CAP, NS, CAP_S, DIRTY, USED, HEAD = 0, 1, 2, 3, 4, 5, 6
COLUMNS = 4
# Columns of a kernel's output row: the first columns of a feature block (operators.columns).
OUTPUT: tuple[str, ...] = (
    "card_count_1m",
    "card_amount_1m",
    "card_count_5m",
    "card_amount_5m",
    "card_count_1h",
    "card_amount_1h",
    "card_distinct_merchants_1h",
    "card_count_24h",
    "card_amount_24h",
    "card_amount_zscore",
    "card_seconds_since_last",
    "card_session_count",
    "card_session_seconds",
)
# What :func:`card_step` returns when it computed the features but left accepting
# to the caller: a tie on the event time (ordered by strings), or a full buffer.
SLOW = -1
# Partials an exact sum can need here: they do not overlap, so each takes bits of its
# own between 2**-1074 (the smallest amount) and 2**127 (far above any window's sum
# of squared deviations, each at most 1e18).
PARTIALS = 1074 + 127 + 1
POSITION_BITS = 32
POSITION_MASK = (1 << POSITION_BITS) - 1


# Helpers are only called from other kernels: no CPython or C entry points to build.
_HELPER: dict[str, Any] = {"no_cpython_wrapper": True, "no_cfunc_wrapper": True}


def _helper(fn: Callable[..., Any]) -> Any:
    return njit(**_HELPER)(fn)


@_helper
def _bisect_right(a: Any, x: int, lo: int, hi: int) -> int:
    while lo < hi:
        mid = (lo + hi) // 2
        if x < a[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


@_helper
def _bisect_left(a: Any, x: int, lo: int, hi: int) -> int:
    while lo < hi:
        mid = (lo + hi) // 2
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@_helper
def _fsum_add(p: Any, n: int, x: float) -> int:
    """Add ``x`` to the ``n`` non-overlapping partials ``p``, as fsum does; return their count."""
    i = 0
    for j in range(n):
        y = p[j]
        if abs(x) < abs(y):
            x, y = y, x
        hi = x + y
        yr = hi - x
        lo = y - yr
        if lo != 0.0:
            p[i] = lo
            i += 1
        x = hi
    if x != 0.0:
        p[i] = x
        i += 1
    return i


@_helper
def _fsum_total(p: Any, n: int) -> float:
    """The partials' sum, rounded once (half-even across partials), as fsum returns it."""
    hi = 0.0
    if n > 0:
        n -= 1
        hi = p[n]
        lo = 0.0
        while n > 0:
            x = hi
            n -= 1
            y = p[n]
            hi = x + y
            yr = hi - x
            lo = y - yr
            if lo != 0.0:
                break
        if n > 0 and ((lo < 0.0 and p[n - 1] < 0.0) or (lo > 0.0 and p[n - 1] > 0.0)):
            y = lo * 2.0
            x = hi + y
            yr = x - hi
            if y == yr:
                hi = x
    return hi


@njit
def fsum_range(values: Any, lo: int, hi: int, p: Any) -> float:
    """``math.fsum(values[lo:hi])``, with room for :data:`PARTIALS` partials in ``p``."""
    n = 0
    for k in range(lo, hi):
        n = _fsum_add(p, n, values[k])
    return float(_fsum_total(p, n))


@_helper
def _zscore(amount: float, earlier: Any, lo: int, hi: int, total: float, p: Any) -> float:
    """Population z-score of ``amount`` against ``earlier[lo:hi]``, whose exact sum is ``total``."""
    n = hi - lo
    if n < 2:
        return 0.0
    first = earlier[lo]
    same = True
    for k in range(lo + 1, hi):
        if earlier[k] != first:
            same = False
            break
    if same:  # equal amounts have std exactly 0; float rounding of their mean would not say so
        return 0.0
    mean = total / n
    m = 0
    for k in range(lo, hi):
        d = earlier[k] - mean
        m = _fsum_add(p, m, d * d)
    std = np.sqrt(_fsum_total(p, m) / n)
    return 0.0 if std == 0 else (amount - mean) / std


@_helper
def _sift_down(a: Any, root: int, end: int) -> None:
    while 2 * root + 1 < end:
        child = 2 * root + 1
        if child + 1 < end and a[child] < a[child + 1]:
            child += 1
        if a[root] >= a[child]:
            return
        a[root], a[child] = a[child], a[root]
        root = child


@_helper
def _distinct(codes: Any, lo: int, hi: int, own: int) -> int:
    """How many distinct values ``codes[lo:hi]`` and ``own`` hold together."""
    k = hi - lo
    if k <= 32:  # pairwise: no allocation for the windows most cards have
        count = 1
        for i in range(lo, hi):
            c = codes[i]
            if c == own:
                continue
            seen = False
            for j in range(lo, i):
                if codes[j] == c:
                    seen = True
                    break
            if not seen:
                count += 1
        return count
    # Heapsort a copy (numba's np.sort takes seconds to compile), then count the runs.
    a = np.empty(k, np.int64)
    for i in range(k):
        a[i] = codes[lo + i]
    for root in range(k // 2 - 1, -1, -1):
        _sift_down(a, root, k)
    for end in range(k - 1, 0, -1):
        a[0], a[end] = a[end], a[0]
        _sift_down(a, 0, end)
    count = 1
    for i in range(k):
        if a[i] != own and (i == 0 or a[i] != a[i - 1]):
            count += 1
    return count


@_helper
def _session_after(buf: Any, q: int, start: int, end: int, count: int) -> bool:
    """Whether the session summary at ``q`` sorts after ``(start, end, count)``."""
    if buf[q] != start:
        return bool(buf[q] > start)
    if buf[q + 1] != end:
        return bool(buf[q + 1] > end)
    return bool(buf[q + 2] > count)


@_helper
def _insert(
    buf: Any, amounts: Any, pos: int, t: int, amount: float, merchant: int, key: int, gap: int
) -> None:
    """Accept an event at index ``pos`` and merge it into the sessions; room must be there."""
    cap, n = buf[CAP], buf[N]
    at, am, mc, ky = HEAD, HEAD + cap, HEAD + 2 * cap, HEAD + 3 * cap
    for k in range(n, pos, -1):
        buf[at + k] = buf[at + k - 1]
        amounts[am + k] = amounts[am + k - 1]
        buf[mc + k] = buf[mc + k - 1]
        buf[ky + k] = buf[ky + k - 1]
    buf[at + pos] = t
    amounts[am + pos] = amount
    buf[mc + pos] = merchant
    buf[ky + pos] = key
    buf[N] = n + 1
    # Every session within the gap of ``t`` merges with it; the others keep their order.
    s = HEAD + COLUMNS * cap
    start, end, count = t, t, 1
    kept = s
    for j in range(s, s + 3 * buf[NS], 3):
        a, b, c = buf[j], buf[j + 1], buf[j + 2]
        if a - gap <= t <= b + gap:
            start, end, count = min(start, a), max(end, b), count + c
        else:
            buf[kept], buf[kept + 1], buf[kept + 2] = a, b, c
            kept += 3
    q = kept  # after any equal summary, where bisect.insort puts it
    while q > s and _session_after(buf, q - 3, start, end, count):
        q -= 3
    for j in range(kept, q, -3):
        buf[j], buf[j + 1], buf[j + 2] = buf[j - 3], buf[j - 2], buf[j - 1]
    buf[q], buf[q + 1], buf[q + 2] = start, end, count
    buf[NS] = (kept - s) // 3 + 1


@_helper
def _prune(buf: Any, amounts: Any, horizon: int) -> int:
    """Drop events and session summaries below ``horizon``; return how many events went."""
    cap, n = buf[CAP], buf[N]
    at, am, mc, ky = HEAD, HEAD + cap, HEAD + 2 * cap, HEAD + 3 * cap
    cut = 0
    if n > 0 and buf[at] < horizon:
        cut = _bisect_left(buf, horizon, at, at + n) - at
        for k in range(cut, n):
            buf[at + k - cut] = buf[at + k]
            amounts[am + k - cut] = amounts[am + k]
            buf[mc + k - cut] = buf[mc + k]
            buf[ky + k - cut] = buf[ky + k]
        buf[N] = n - cut
    s = HEAD + COLUMNS * cap
    kept = s
    for j in range(s, s + 3 * buf[NS], 3):
        if buf[j + 1] >= horizon:
            buf[kept], buf[kept + 1], buf[kept + 2] = buf[j], buf[j + 1], buf[j + 2]
            kept += 3
    buf[NS] = (kept - s) // 3
    return cut


@_helper
def _step(
    buf: Any,
    out: Any,
    row: int,
    t: int,
    amount: float,
    merchant: int,
    key: int,
    horizon: int,
    gap: int,
    accept: bool,
    prune: bool,
) -> int:
    amounts = buf.view(np.float64)
    cap, n = buf[CAP], buf[N]
    at, am, mc = HEAD, HEAD + cap, HEAD + 2 * cap
    # Indexes below are into ``buf``: event i of the card is at ``at + i``.
    hi = _bisect_right(buf, t, at, at + n)
    lo_all = _bisect_left(buf, horizon, at, hi)
    # The windows nest (1m in 5m in 1h in 24h), all end at ``hi`` and start no lower
    # than the retention horizon.
    lo_day = max(lo_all, _bisect_right(buf, t - DAY, at, hi))
    lo_hour = _bisect_right(buf, t - HOUR, lo_day, hi)
    lo_5m = _bisect_right(buf, t - 5 * MINUTE, lo_day, hi)
    lo_min = _bisect_right(buf, t - MINUTE, lo_day, hi)
    shift = am - at  # from an event's time to its amount
    p = np.empty(PARTIALS)
    total_min = fsum_range(amounts, lo_min + shift, hi + shift, p)
    total_5m = fsum_range(amounts, lo_5m + shift, hi + shift, p)
    total_hour = fsum_range(amounts, lo_hour + shift, hi + shift, p)
    total_day = fsum_range(amounts, lo_day + shift, hi + shift, p)
    out[row, 0] = hi - lo_min + 1
    out[row, 1] = total_min + amount
    out[row, 2] = hi - lo_5m + 1
    out[row, 3] = total_5m + amount
    out[row, 4] = hi - lo_hour + 1
    out[row, 5] = total_hour + amount
    out[row, 6] = _distinct(buf, lo_hour + mc - at, hi + mc - at, merchant)
    out[row, 7] = hi - lo_day + 1
    out[row, 8] = total_day + amount
    out[row, 9] = _zscore(amount, amounts, lo_day + shift, hi + shift, total_day, p)
    out[row, 10] = (t - buf[hi - 1]) / 1000 if hi > lo_all else -1.0
    start, end, count = t, t, 1
    s = HEAD + COLUMNS * cap
    for j in range(s, s + 3 * buf[NS], 3):
        a, b, c = buf[j], buf[j + 1], buf[j + 2]
        if b < horizon:
            continue
        if a - gap <= t <= b + gap:
            start, end, count = min(start, a), max(end, b), count + c
    out[row, 11] = count
    out[row, 12] = (end - start) / 1000
    result = 0
    if accept:
        pos = hi - at
        if (pos > 0 and buf[hi - 1] == t) or n == cap or buf[NS] == buf[CAP_S]:
            return SLOW
        _insert(buf, amounts, pos, t, amount, merchant, key, gap)
        result = pos
    if prune:
        result |= _prune(buf, amounts, horizon) << POSITION_BITS
    return result


@jit
def card_step(
    buf: Any,
    out: Any,
    row: int,
    t: int,
    amount: float,
    merchant: int,
    key: int,
    horizon: int,
    gap: int,
    accept: bool,
    prune: bool,
) -> int:
    """Features of an event at ``t`` into ``out[row]``; then accept it and prune the card.

    Returns the accepted event's index plus the count of pruned events shifted
    left by :data:`POSITION_BITS`, or :data:`SLOW` when the event is to be accepted
    but ties on its time or finds the buffer full: then nothing is accepted nor
    pruned, and the caller does both.
    """
    return _step(buf, out, row, t, amount, merchant, key, horizon, gap, accept, prune)  # type: ignore[no-any-return]


def _pointer_typing(typingctx: Any, address: Any) -> Any:
    """The ``int64`` ``address`` as a ``void*`` (for :func:`numba.carray`)."""
    signature = types.voidptr(address)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.inttoptr(args[0], ir.IntType(8).as_pointer())

    return signature, codegen


_pointer: Any = intrinsic(_pointer_typing)


@_helper
def _buffer(address: int) -> Any:
    """The card buffer whose data starts at ``address``, its length read from its header."""
    head = carray(_pointer(address), (HEAD,), np.int64)
    size = HEAD + COLUMNS * head[CAP] + 3 * head[CAP_S]
    return carray(_pointer(address), (size,), np.int64)


@jit
def address(buf: Any) -> int:
    """Where ``buf``'s data starts, for :func:`card_run`."""
    return buf.ctypes.data  # type: ignore[no-any-return]


# Columns of :func:`card_run`'s ``rows``, and the bits of its ``FLAGS`` column.
CARD, TIME, MERCHANT, KEY, HORIZON, FLAGS = 0, 1, 2, 3, 4, 5
ACCEPT, STOP = 1, 2
# A ``results`` entry no row has written yet.
UNSET = -1


@jit
def card_run(
    cards: Any,
    rows: Any,
    amounts: Any,
    turned: Any,
    out: Any,
    row: int,
    results: Any,
    gap: int,
    start: int,
) -> int:
    """:func:`card_step` for the rows from ``start`` on, until one it cannot take.

    Row ``i`` is an event of the card whose buffer starts at address
    ``cards[rows[i, CARD]]`` (the caller keeps those buffers alive and
    unmoved), at ``rows[i, TIME]`` with ``amounts[i]``, its id's hash
    ``rows[i, KEY]``; a row whose key its card holds may be a duplicate: the
    kernel flags it ``STOP`` and leaves it. It accepts the event if its
    ``ACCEPT`` flag is set, and marks its card ``DIRTY`` then (and
    ``turned[rows[i, CARD]]`` where the card was clean); a dirty card is pruned to
    ``rows[i, HORIZON]``. Features go to consecutive rows of ``out``
    from ``row``. Row ``i``'s result goes to ``results[i]``: the accepted
    event's index plus one (0: none accepted), plus the pruned count shifted
    left by :data:`POSITION_BITS`.

    Returns the index of the first row it left to the caller: one flagged
    ``STOP``, untouched, or one :func:`card_step` returns :data:`SLOW` for,
    whose features are in ``out`` and whose card is marked ``DIRTY``; or the row
    count when it took them all.
    """
    for i in range(start, rows.shape[0]):
        flags = rows[i, FLAGS]
        if flags & STOP:
            return i
        k = rows[i, CARD]
        buf = _buffer(cards[k])
        key = rows[i, KEY]
        ky = HEAD + 3 * buf[CAP]
        for j in range(ky, ky + buf[N]):
            if buf[j] == key:
                rows[i, FLAGS] = flags | STOP
                return i
        accept = (flags & ACCEPT) != 0
        if accept and buf[DIRTY] == 0:
            buf[DIRTY] = 1
            turned[k] = True
        done = _step(
            buf,
            out,
            row,
            rows[i, TIME],
            amounts[i],
            rows[i, MERCHANT],
            key,
            rows[i, HORIZON],
            gap,
            accept,
            buf[DIRTY] != 0,
        )
        if done == SLOW:
            return i
        results[i] = done + 1 if accept else done
        row += 1
    return int(rows.shape[0])


@jit
def short_of_room(cards: Any, counts: Any, used: int) -> Any:
    """Which of the cards at addresses ``cards`` lack room for ``counts`` more events (and
    as many more sessions, since each event can open one): their indexes. Marks each
    card ``USED`` at ``used``, the batch that is about to run over them."""
    short = np.empty(len(cards), np.int64)
    m = 0
    for k in range(len(cards)):
        buf = _buffer(cards[k])
        buf[USED] = used
        if buf[CAP] - buf[N] < counts[k] or buf[CAP_S] - buf[NS] < counts[k]:
            short[m] = k
            m += 1
    return short[:m]


@jit
def grown(buf: Any, more: int) -> Any:
    """``buf``'s events and sessions in a new buffer with room for ``more`` of each: twice
    the old room, or what ``more`` needs, where the old falls short."""
    n, cap, ns, cap_s = buf[N], buf[CAP], buf[NS], buf[CAP_S]
    new_cap = max(2 * cap, n + more) if cap - n < more else cap
    new_cap_s = max(2 * cap_s, ns + more) if cap_s - ns < more else cap_s
    new = np.zeros(HEAD + COLUMNS * new_cap + 3 * new_cap_s, np.int64)
    new[N], new[CAP], new[NS], new[CAP_S] = n, new_cap, ns, new_cap_s
    new[DIRTY], new[USED] = buf[DIRTY], buf[USED]
    # Loops, not slice assignments: those take seconds longer to compile.
    for column in range(COLUMNS):
        for i in range(n):
            new[HEAD + column * new_cap + i] = buf[HEAD + column * cap + i]
    s, old_s = HEAD + COLUMNS * new_cap, HEAD + COLUMNS * cap
    for j in range(3 * ns):
        new[s + j] = buf[old_s + j]
    return new


@jit
def newest(cards: Any, none: int) -> Any:
    """Each card's newest event time or session end (``none`` for an empty card), for the
    cards at addresses ``cards``."""
    out = np.empty(len(cards), np.int64)
    for k in range(len(cards)):
        buf = _buffer(cards[k])
        cap, n = buf[CAP], buf[N]
        t = buf[HEAD + n - 1] if n else none
        s = HEAD + COLUMNS * cap
        for j in range(s + 1, s + 3 * buf[NS], 3):  # session ends
            t = max(t, buf[j])
        out[k] = t
    return out


@jit
def packed(buf: Any) -> Any:
    """The card's events and sessions as a stored card holds them (:func:`unpacked`).

    ``[times[n], amounts[n], local[n], sessions[3 * ns], codes[d]]``: ``codes``
    are the card's ``d`` distinct merchant codes in order of first appearance,
    ``local`` each event's index among them, so what the caller stores of them
    (``codes``' merchant ids, ``local``) depends on the card's events alone.
    """
    n, cap, ns = buf[N], buf[CAP], buf[NS]
    codes = buf[HEAD + 2 * cap : HEAD + 2 * cap + n]
    out = np.empty(4 * n + 3 * ns, np.int64)
    # Each event's first event with the same code: equal codes sort together, in order.
    order = np.argsort(codes, kind="mergesort")
    first = np.empty(n, np.int64)
    f = 0
    for j in range(n):
        i = order[j]
        if j == 0 or codes[order[j - 1]] != codes[i]:
            f = i
        first[i] = f
    table = 3 * n + 3 * ns
    d = 0
    for i in range(n):
        out[i] = buf[HEAD + i]
        out[n + i] = buf[HEAD + cap + i]
        if first[i] == i:
            out[2 * n + i] = d
            out[table + d] = codes[i]
            d += 1
        else:
            out[2 * n + i] = out[2 * n + first[i]]
    s = HEAD + COLUMNS * cap
    for j in range(3 * ns):
        out[3 * n + j] = buf[s + j]
    return out[: table + d]


@jit
def unpacked(data: Any, table: Any, keys: Any, room: int) -> Any:
    """A card buffer from :func:`packed`'s ``data`` less its codes, with ``table`` the
    engine's code of each local merchant index, ``keys`` the events' keys, and room for
    ``room`` more events; an empty array if ``data`` does not fit them (damaged state:
    the kernel reads nothing outside its arrays)."""
    n = len(keys)
    if len(data) < 3 * n or (len(data) - 3 * n) % 3:
        return np.zeros(0, np.int64)
    ns = (len(data) - 3 * n) // 3
    cap, cap_s = n + room, ns + 2
    buf = np.zeros(HEAD + COLUMNS * cap + 3 * cap_s, np.int64)
    buf[N], buf[CAP], buf[NS], buf[CAP_S] = n, cap, ns, cap_s
    for i in range(n):
        local = data[2 * n + i]
        if local < 0 or local >= len(table):
            return np.zeros(0, np.int64)
        buf[HEAD + i] = data[i]
        buf[HEAD + cap + i] = data[n + i]
        buf[HEAD + 2 * cap + i] = table[local]
        buf[HEAD + 3 * cap + i] = keys[i]
    s = HEAD + COLUMNS * cap
    for j in range(3 * ns):
        buf[s + j] = data[3 * n + j]
    return buf


@jit
def card_place(
    buf: Any,
    pos: int,
    t: int,
    amount: float,
    merchant: int,
    key: int,
    gap: int,
    horizon: int,
    prune: bool,
) -> int:
    """Accept an event at index ``pos`` (the caller ordered its ties and made room), then
    prune the card if ``prune``; returns as :func:`card_step` does."""
    amounts = buf.view(np.float64)
    _insert(buf, amounts, pos, t, amount, merchant, key, gap)
    return pos | (_prune(buf, amounts, horizon) << POSITION_BITS if prune else 0)


_BUF = types.Array(types.int64, 1, "C")
_INT = types.int64
SIGNATURES: tuple[tuple[Any, tuple[Any, ...]], ...] = (
    (
        card_step,
        (
            _BUF,
            types.Array(types.float64, 2, "C"),
            _INT,
            _INT,
            types.float64,
            _INT,
            _INT,
            _INT,
            _INT,
            types.boolean,
            types.boolean,
        ),
    ),
    (card_place, (_BUF, _INT, _INT, types.float64, _INT, _INT, _INT, _INT, types.boolean)),
    (address, (_BUF,)),
    (short_of_room, (_BUF, _BUF, _INT)),
    (newest, (_BUF, _INT)),
    (grown, (_BUF, _INT)),
    (packed, (_BUF,)),
    (unpacked, (types.Array(types.int64, 1, "C", readonly=True), _BUF, _BUF, _INT)),
    (
        card_run,
        (
            _BUF,
            types.Array(types.int64, 2, "C"),
            types.Array(types.float64, 1, "C"),
            types.Array(types.boolean, 1, "C"),
            types.Array(types.float64, 2, "C"),
            _INT,
            _BUF,
            _INT,
            _INT,
        ),
    ),
)


def compile_kernels() -> None:
    """Compile (or load from numba's cache) every kernel for the engine's argument types."""
    compile_each(SIGNATURES)


def empty_card(cap: int = 4, cap_s: int = 2) -> np.ndarray[Any, np.dtype[np.int64]]:
    """A card buffer with no events and room for ``cap`` events and ``cap_s`` sessions."""
    buf = np.zeros(HEAD + COLUMNS * cap + 3 * cap_s, np.int64)
    buf[CAP] = cap
    buf[CAP_S] = cap_s
    return buf
