"""Merchant tumbling windows (5 min, epoch-aligned): chargeback counts, features, aggregates.

Time rules (``docs/semantics.md``): the operator's watermark is the minimum over
its inputs (card operators and chargeback partitions), taken as of each record.
A non-late transaction counts in the window containing its event time; a
chargeback counts in its own window unless that window is closed (watermark
``>= end + lateness``), then it is a ``timestamp`` dead letter. A window closes
once, emitting its aggregate to ``window-aggregates``.

State lifetime: one entry per (merchant, window start) with activity; a close
timer (``T``) and, after closing, a purge timer (``P``) ``RETAIN_MS`` (one
window length plus 24 h) later. A non-late transaction stops asking for a
window as its previous one a window length after it closes; a late one is
scored from the card history kept back to ``wm - lateness - 24h``, so its
previous window is kept as long as such a transaction can still arrive.

Cache: with ``cache_windows`` set, each engine keeps the windows it read or
changed in memory and writes the changed ones back at :meth:`MerchantWindowEngine.flush`
(the shard's snapshot when recovery is on, and the end of the input when the
store outlives the run) or
when the cache outgrows its bound (then it is written and emptied). Timers
are still written as windows are created, so :meth:`MerchantWindowEngine.advance`
finds them by a scan; a purged window leaves the cache and the store together.
A busy merchant's window is thus read once and written once an epoch rather
than once a batch: at moderate load a batch holds a few records a merchant.

Computation: a batch's windows are numbered over arrays, the rows between two
chargebacks or ticks run in one compiled call (:mod:`operators.merchant_kernel`)
over the windows' counts, and the exact amount sums are added per window after
(their order does not change them).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import count
from operator import itemgetter, lshift
from typing import Any

import numpy as np

from operators.card_features import DAY
from operators.columns import MERCHANT_COLUMN
from operators.merchant_kernel import compile_kernel, merchant_run
from operators.messages import (
    CbEnvelope,
    FeatureBlock,
    OutMessage,
    RawRecord,
    Tick,
    TxnColumns,
    json_value,
)
from operators.watermarks import NO_WATERMARK, MinWatermark, TimeConfig
from schemas.timefmt import format_ms
from state import keys
from state.store import StateStore

WINDOW_MS = 5 * 60_000
# A late transaction at ``t >= wm - lateness - DAY`` (the oldest card history kept)
# reads the window ending at ``floor(t / 5 min) * 5 min``: keep it until then.
RETAIN_MS = WINDOW_MS + DAY
# A window's value: a format byte, txn_count and chargeback_count, then its amount sum
# exactly, as a count of 2**-1074 (big-endian, unsigned, as long as it takes).
_VALUE = struct.Struct(">Bqq")
_EXACT = 1
# The format before sums were exact: txn_count, amount_sum (a float), chargeback_count.
_FLOAT_VALUE = struct.Struct(">qdq")
# Every finite double is a whole number of 2**-1074 (the smallest subnormal).
_UNIT_BITS = 1074
_UNIT = 1 << _UNIT_BITS
# A double's significand as a whole number: its frexp fraction times this.
_MANTISSA = float(1 << 53)
# Window keys an engine remembers.
_KEYS_MAX = 1 << 16
# Windows one batch's transactions may span: event times lie in years 1970 to 9999,
# under 2**30 windows, so a row's (merchant, window) fits one int64 as numbered here.
_SLOTS_MAX = 1 << 31
# (txn_count, amount sum in units of 2**-1074, chargeback_count)
Window = tuple[int, int, int]


@dataclass(frozen=True, kw_only=True)
class MerchantConfig:
    """Time bounds and where closed windows go."""

    time: TimeConfig
    aggregates_topic: str
    # Windows kept in memory per engine (0: read and write RocksDB every batch).
    cache_windows: int = 0


class MerchantWindowEngine:
    """Keeps merchant windows in the store; adds merchant features; closes windows."""

    def __init__(
        self,
        config: MerchantConfig,
        store: StateStore,
        dead_letter: Callable[[CbEnvelope, str], OutMessage],
        *,
        shard: str = "",
    ) -> None:
        # Shards of one process share the store: each closes only its own windows.
        self._close = keys.shard_namespace(keys.CLOSE_TIMER, shard)
        self._purge = keys.shard_namespace(keys.PURGE_TIMER, shard)
        self._lateness = config.time.allowed_lateness_ms
        self._topic = config.aggregates_topic
        # Windows close in order of their end: the end places an aggregate in the shard's output.
        self._origin = f"{config.aggregates_topic}@{shard}"
        self._store = store
        self._dead_letter = dead_letter
        self._cache_max = config.cache_windows
        # Window values read or written, None where the store has none; ``_dirty``
        # ones differ from the store.
        self._cache: dict[bytes, Window | None] = {}
        self._dirty: set[bytes] = set()
        # Window keys by (merchant, start), kept across batches (up to ``_KEYS_MAX``):
        # a batch's windows are mostly the last batch's.
        self._keys: dict[tuple[str, int], bytes] = {}
        # The record being processed: the one to blame if processing raises.
        self.at: RawRecord | None = None
        compile_kernel()

    def process(
        self,
        block: FeatureBlock,
        steps: Sequence[tuple[str, int | CbEnvelope | Tick]],
        watermarks: MinWatermark,
    ) -> list[OutMessage]:
        """Apply ``steps`` in order, filling ``block``'s merchant columns; return dead letters.

        A step is a row of ``block`` (its index; the rows come in order), a
        chargeback or a tick, each beside the name of the upstream operator
        (card shard or chargeback partition) that sent it.

        The batch's windows are numbered (codes): the rows between two other
        steps run in :func:`operators.merchant_kernel.merchant_run` over the
        windows' counts; chargebacks and ticks are applied here between runs.
        """
        txns, marks = block.txns, block.watermarks
        raws, merchant_ids, lates = txns.raw, txns.merchant_id, txns.late
        n = len(txns)
        # Window keys by (merchant, start), built once a pair: a batch holds many rows
        # of a merchant's window, and the last batch's windows are mostly this one's.
        built = self._keys
        if len(built) > _KEYS_MAX:
            built.clear()
        window_key = keys.window_key

        def key_of(merchant: str, start: int) -> bytes:
            key = built.get((merchant, start))
            if key is None:
                key = built[merchant, start] = window_key(merchant, start)
            return key

        # The batch's windows, numbered (codes index the counts the kernel keeps): the
        # rows' own windows, their previous windows, then the chargebacks'.
        try:
            times = np.fromiter(txns.event_time, np.int64, n)
            slots = times // WINDOW_MS
            own, prev, code_pairs = _row_windows(merchant_ids, slots)
            code_keys = [key_of(merchant, start) for merchant, start in code_pairs]
        except Exception:
            # Again a row at a time, to blame the record whose key cannot be built.
            for raw, merchant, t in zip(raws, merchant_ids, txns.event_time, strict=True):
                self.at = raw
                start = _window_start(t)
                window_key(merchant, start)
                window_key(merchant, max(start - WINDOW_MS, 0))
            raise
        starts = slots * WINDOW_MS
        # Steps other than rows (chargebacks, ticks): few, where a batch has any.
        others = (
            [] if len(steps) == n else [j for j, s in enumerate(steps) if type(s[1]) is not int]
        )
        cb_codes: list[int] = []
        code_of: dict[tuple[str, int], int] = {}
        for j in others:
            item = steps[j][1]
            if type(item) is CbEnvelope:
                self.at = item.raw
                if not code_of:
                    code_of.update(zip(code_pairs, count()))
                pair = (item.cb.merchant_id, _window_start(item.cb.event_time))
                key = key_of(*pair)
                code = code_of.setdefault(pair, len(code_of))
                if code == len(code_keys):
                    code_pairs.append(pair)
                    code_keys.append(key)
                cb_codes.append(code)
        windows = self._windows(set(code_keys))
        olds = list(map(windows.__getitem__, code_keys))
        txn_counts = np.array([0 if old is None else old[0] for old in olds], np.int64)
        cb_counts = np.array([0 if old is None else old[2] for old in olds], np.int64)
        # The step that first counted in each window: a new window's close timer is
        # written in that order.
        touched = np.full(len(code_keys), -1, np.int64)
        accept = np.logical_not(lates) if any(lates) else np.ones(n, np.bool_)
        horizons = np.empty(n, np.int64)
        counts = np.empty(n, np.float64)
        rates = np.empty(n, np.float64)
        dead: list[OutMessage] = []
        update, current = watermarks.update, watermarks.current
        cb_code = iter(cb_codes)
        row = 0
        for b, j in enumerate([*others, len(steps)]):
            stop = j - b  # the rows before step ``j``
            if stop > row:
                # As of each row, the watermark after its update: a previous window
                # starting at or before its horizon is purged.
                origins = list(map(itemgetter(0), steps[row + b : j]))
                wms = watermarks.advance(origins, marks[row:stop])
                horizons[row:stop] = self._purged_through(wms)
                run = (own, prev, accept, starts, horizons, txn_counts, cb_counts, touched)
                merchant_run(*run, counts, rates, row, stop, b)
                row = stop
            if j == len(steps):
                break
            origin, item = steps[j]
            if isinstance(item, Tick):
                update(origin, item.watermark)
                continue
            assert isinstance(item, CbEnvelope)
            self.at = item.raw
            code = next(cb_code)
            update(item.raw.source, item.watermark)
            wm = current()
            start = _window_start(item.cb.event_time)
            if wm != NO_WATERMARK and start + WINDOW_MS + self._lateness <= wm:
                window = f"[{format_ms(start)}, {format_ms(start + WINDOW_MS)})"
                dead.append(self._dead_letter(item, f"window {window} already closed"))
            else:
                cb_counts[code] += 1
                if touched[code] < 0:
                    touched[code] = j
        if n:
            block.features[:, MERCHANT_COLUMN] = counts
            block.features[:, MERCHANT_COLUMN + 1] = rates
        sums = self._unit_sums(own[accept], np.flatnonzero(accept).tolist(), txns)
        txn_now, cb_now, firsts = txn_counts.tolist(), cb_counts.tolist(), touched.tolist()
        changes: dict[bytes, bytes | None] = {}
        dirty, close = self._dirty, self._close
        # The windows counted in, in the order of their first count: a new one gets its
        # close timer then.
        for code in sorted(np.flatnonzero(touched >= 0).tolist(), key=firsts.__getitem__):
            key, old = code_keys[code], olds[code]
            if old is None:
                self.at = _record(steps[firsts[code]][1], raws)
                merchant, start = code_pairs[code]
                changes[keys.timer_key(close, start + WINDOW_MS, merchant)] = b""
                old = (0, 0, 0)
            windows[key] = (txn_now[code], old[1] + sums.get(code, 0), cb_now[code])
            dirty.add(key)
        for _, item in reversed(steps):  # the last record of the steps
            if not isinstance(item, Tick):
                self.at = _record(item, raws)
                break
        if len(self._cache) > self._cache_max:  # always, without a cache (0)
            self._write_dirty(changes)
            self._cache.clear()  # cheap to refill: a merchant's windows are few and hot
        self._store.write(changes)
        return dead

    def _unit_sums(
        self, codes: np.ndarray[Any, np.dtype[np.int64]], rows: list[int], txns: TxnColumns
    ) -> dict[int, int]:
        """The exact amount sum (units of 2**-1074) of ``rows``, by their window ``codes``.

        The sum is kept exact, so a window's aggregate does not depend on the order
        its transactions arrived in (partitions interleave differently on a replay).
        Each amount is ``mantissa * 2**(exponent - 53)`` (:func:`numpy.frexp`), so its
        units are ``mantissa << (exponent + 1021)``: the rows' units are summed as
        ``mantissa << (shift - lowest)`` (Python ints of a few digits, not of 36),
        and each sum shifted by the lowest shift once.
        """
        if not rows:
            return {}
        amounts = txns.amount
        chosen = amounts if len(rows) == len(amounts) else list(map(amounts.__getitem__, rows))
        mantissas: np.ndarray[Any, Any]
        try:
            values = np.fromiter(chosen, np.float64, len(chosen))
        except (OverflowError, TypeError, ValueError):
            values = np.array([np.nan])
        fractions, exponents = np.frexp(values)
        shifts = exponents.astype(np.int64) + (_UNIT_BITS - 53)
        if np.isfinite(values).all() and int(shifts.min()) >= 0:
            mantissas = (fractions * _MANTISSA).astype(np.int64)  # exact: 53 bits at most
            lowest = int(shifts.min())
            shifts -= lowest
        else:
            # Not finite, subnormal or not a float: a row at a time, to blame the record
            # whose amount has no exact units.
            units = []
            for row in rows:
                self.at = txns.raw[row]
                units.append(exact_units(amounts[row]))
            mantissas = np.array(units, object)
            shifts = np.zeros(len(rows), np.int64)
            lowest = 0
        order = np.argsort(codes, kind="stable")
        ordered = codes[order]
        terms = list(map(lshift, mantissas[order].tolist(), shifts[order].tolist()))
        ends = np.flatnonzero(np.diff(ordered, append=-1)).tolist()
        window_codes = ordered[ends].tolist()
        sums: dict[int, int] = {}
        begin = 0
        for code, end in zip(window_codes, ends, strict=True):
            sums[code] = sum(terms[begin : end + 1]) << lowest
            begin = end + 1
        return sums

    def flush(self) -> None:
        """Write every changed window to the store in one batch."""
        changes: dict[bytes, bytes | None] = {}
        self._write_dirty(changes)
        self._store.write(changes)

    def _write_dirty(self, changes: dict[bytes, bytes | None]) -> None:
        cache = self._cache
        for key in self._dirty:
            value = cache[key]
            changes[key] = None if value is None else pack_window(value)
        self._dirty = set()

    def _windows(self, wanted: set[bytes]) -> dict[bytes, Window | None]:
        """The cache, holding every ``wanted`` window (read from the store if missing)."""
        cache = self._cache
        missing = sorted(k for k in wanted if k not in cache)
        if missing:
            for k, v in zip(missing, self._store.get_many(missing), strict=True):
                cache[k] = unpack_window(v) if v is not None else None
        return cache

    def advance(self, watermark: int) -> list[OutMessage]:
        """Close windows with ``end + lateness <= watermark``; purge those ``RETAIN_MS`` older."""
        if watermark == NO_WATERMARK:
            return []
        changes: dict[bytes, bytes | None] = {}
        out: list[OutMessage] = []
        purged_through = int(self._purged_through(np.array([watermark]))[0])
        close_end = keys.timer_range_end(self._close, watermark - self._lateness)
        due = list(self._store.scan(self._close, close_end))
        parsed = [keys.parse_timer_key(key, len(self._close)) for key, _ in due]
        window_keys = [keys.window_key(merchant, end - WINDOW_MS) for end, merchant in parsed]
        windows = self._windows(set(window_keys))
        for (key, _), (end, merchant), window_key in zip(due, parsed, window_keys, strict=True):
            changes[key] = None
            value = windows[window_key]
            if end <= purged_through:
                self._drop(changes, window_key)
            else:
                changes[keys.timer_key(self._purge, end, merchant)] = b""
            if value is not None:
                out.append(self._aggregate(merchant, end - WINDOW_MS, *value))
        purge_end = keys.timer_range_end(self._purge, purged_through)
        for key, _ in self._store.scan(self._purge, purge_end):
            end, merchant = keys.parse_timer_key(key, len(self._close))
            changes[key] = None
            self._drop(changes, keys.window_key(merchant, end - WINDOW_MS))
        self._store.write(changes)
        return out

    def _drop(self, changes: dict[bytes, bytes | None], window_key: bytes) -> None:
        """Delete a window from the store and the cache."""
        changes[window_key] = None
        self._cache.pop(window_key, None)
        self._dirty.discard(window_key)

    def _purged_through(
        self, watermarks: np.ndarray[Any, np.dtype[np.int64]]
    ) -> np.ndarray[Any, np.dtype[np.int64]]:
        """The latest end of a window deleted at each of ``watermarks`` (below every end
        without one)."""
        return np.where(
            watermarks == NO_WATERMARK, NO_WATERMARK, watermarks - self._lateness - RETAIN_MS
        )

    def _aggregate(self, merchant: str, start: int, txns: int, units: int, cbs: int) -> OutMessage:
        body = {
            "merchant_id": merchant,
            "window_start": format_ms(start),
            "window_end": format_ms(start + WINDOW_MS),
            "txn_count": txns,
            "amount_sum": amount_sum(units),
            "chargeback_count": cbs,
            "chargeback_rate": cbs / max(1, txns),
        }
        return OutMessage(
            self._topic,
            merchant.encode(),
            json_value(body),
            self._origin,
            start + WINDOW_MS,
        )


def exact_units(amount: float) -> int:
    """``amount`` (finite, not negative) as a whole number of 2**-1074, exactly.

    >>> exact_units(0.5) == 1 << 1073
    True
    """
    numerator, denominator = amount.as_integer_ratio()  # the denominator is a power of two
    return numerator << (_UNIT_BITS + 1 - denominator.bit_length())


def amount_sum(units: int) -> float:
    """The float nearest an exact sum of :func:`exact_units` (what ``math.fsum`` gives).

    >>> amount_sum(exact_units(0.1) + exact_units(0.2) + exact_units(0.3))
    0.6
    """
    return units / _UNIT  # int / int is correctly rounded


def pack_window(value: Window) -> bytes:
    """A window's stored form."""
    txns, units, cbs = value
    return _VALUE.pack(_EXACT, txns, cbs) + units.to_bytes((units.bit_length() + 7) // 8)


def unpack_window(blob: bytes) -> Window:
    """A stored window, in either format (a float sum is exact as it stands)."""
    if blob[0] == _EXACT:  # a float-format count would have to be 2**56 or more
        _, txns, cbs = _VALUE.unpack_from(blob)
        return txns, int.from_bytes(blob[_VALUE.size :]), cbs
    txns, total, cbs = _FLOAT_VALUE.unpack(blob)
    return txns, exact_units(total), cbs


def _row_windows(
    merchant_ids: list[str], slots: np.ndarray[Any, np.dtype[np.int64]]
) -> tuple[
    np.ndarray[Any, np.dtype[np.int64]], np.ndarray[Any, np.dtype[np.int64]], list[tuple[str, int]]
]:
    """The windows of rows (their merchants; ``slots``, event times over ``WINDOW_MS``), numbered.

    Returns each row's own window's number, its previous window's (-1 for the
    epoch's first window, which has none) and each number's (merchant, start):
    the rows' windows, by merchant and start, then the previous windows no row is in.
    Computed over arrays: a batch holds many rows of a merchant's window.
    """
    n = len(merchant_ids)
    if not n:
        return np.empty(0, np.int64), np.empty(0, np.int64), []
    # Each merchant's number: the count of rows before its first.
    firsts: dict[str, int] = {}
    merchants = np.fromiter(map(firsts.setdefault, merchant_ids, count()), np.int64, n)
    lowest = int(slots.min())
    span = int(slots.max()) - lowest + 1
    if span > _SLOTS_MAX:  # event times lie in years 1970 to 9999 (the contract)
        raise ValueError(f"event times {span} windows apart in one batch")
    order = np.argsort(merchants * span + (slots - lowest), kind="stable")
    m, s = merchants[order], slots[order]
    first = np.ones(n, np.bool_)  # a row that starts a window, in that order
    first[1:] = (m[1:] != m[:-1]) | (s[1:] != s[:-1])
    own = np.empty(n, np.int64)
    own[order] = np.cumsum(first) - 1
    m, s = m[first], s[first]
    windows = len(m)
    # A window whose previous one is the window numbered just before it; else its
    # previous one is numbered after the rows' windows (none before the epoch's first).
    follows = np.zeros(windows, np.bool_)
    follows[1:] = (m[1:] == m[:-1]) & (s[1:] == s[:-1] + 1)
    outside = np.flatnonzero(~follows & (s != 0))
    prev_of = np.where(follows, np.arange(-1, windows - 1), -1)
    prev_of[outside] = np.arange(windows, windows + len(outside))
    names = list(map(merchant_ids.__getitem__, np.concatenate([m, m[outside]]).tolist()))
    starts = (np.concatenate([s, s[outside] - 1]) * WINDOW_MS).tolist()
    return own, prev_of[own], list(zip(names, starts, strict=True))


def _record(item: int | CbEnvelope | Tick, raws: list[RawRecord]) -> RawRecord | None:
    """The record of a step: a row's (``item`` its index) or a chargeback's; a tick has none."""
    if isinstance(item, int):
        return raws[item]
    return item.raw if isinstance(item, CbEnvelope) else None


def _window_start(t: int) -> int:
    return t - t % WINDOW_MS
