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
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from operators.card_features import DAY
from operators.columns import MERCHANT_COLUMN
from operators.messages import CbEnvelope, FeatureBlock, OutMessage, RawRecord, Tick, json_value
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
# Window keys an engine remembers.
_KEYS_MAX = 1 << 16
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
        """
        txns, marks = block.txns, block.watermarks.tolist()
        raws, merchant_ids, amounts, lates = txns.raw, txns.merchant_id, txns.amount, txns.late
        starts = [t - t % WINDOW_MS for t in txns.event_time]
        # Window keys of each row (previous, own) and chargeback (own), built once a
        # (merchant, start): a batch holds many rows of a merchant's window.
        built = self._keys
        if len(built) > _KEYS_MAX:
            built.clear()
        window_key = keys.window_key

        def key_of(merchant: str, start: int) -> bytes:
            key = built.get((merchant, start))
            if key is None:
                key = built[merchant, start] = window_key(merchant, start)
            return key

        try:
            # Keys are built for the batch's distinct (merchant, start) pairs only, then
            # each row's are looked up in C (``map`` over a dict's ``__getitem__``).
            pairs = list(zip(merchant_ids, starts, strict=True))
            prev_of: dict[tuple[str, int], bytes | None] = {}
            for pair in set(pairs):
                merchant, start = pair
                key_of(merchant, start)
                # Event times start at the epoch: the first window has no previous one.
                prev_of[pair] = key_of(merchant, start - WINDOW_MS) if start else None
            own_keys = list(map(built.__getitem__, pairs))
            prev_keys = list(map(prev_of.__getitem__, pairs))
        except Exception:
            # Again a row at a time, to blame the record whose key cannot be built.
            for raw, merchant, start in zip(raws, merchant_ids, starts, strict=True):
                self.at = raw
                window_key(merchant, start)
                window_key(merchant, max(start - WINDOW_MS, 0))
            raise
        cb_keys: list[bytes] = []
        for _, item in steps:
            if type(item) is CbEnvelope:
                self.at = item.raw
                cb_keys.append(key_of(item.cb.merchant_id, _window_start(item.cb.event_time)))
        # This batch's windows (``built`` also holds earlier batches').
        wanted = {*own_keys, *cb_keys}
        wanted.update(key for key in prev_of.values() if key is not None)
        windows = self._windows(wanted)
        changes: dict[bytes, bytes | None] = {}
        counts: list[float] = []
        rates: list[float] = []
        dead: list[OutMessage] = []
        dirty = self._dirty
        close = self._close

        def bump(key: bytes, merchant: str, start: int, txns: int, units: int, cbs: int) -> None:
            old = windows.get(key)
            if old is None:
                old = (0, 0, 0)
                changes[keys.timer_key(close, start + WINDOW_MS, merchant)] = b""
            windows[key] = (old[0] + txns, old[1] + units, old[2] + cbs)
            dirty.add(key)

        update, current = watermarks.update, watermarks.current
        units_of = _UNITS.get
        cbs_seen = 0
        # The watermark an origin last reported: a row's update is skipped when it repeats
        # (updates only raise), which is most rows of a block.
        last: tuple[str, int] | None = None
        # A previous window starting at or before this is purged (None: ask ``current()``
        # again, the watermark may have moved).
        purge_at: int | None = None
        for origin, item in steps:
            if type(item) is int:
                self.at = raws[item]
                mark = marks[item]
                if (origin, mark) != last:
                    update(origin, mark)
                    last = (origin, mark)
                    purge_at = None
                start = starts[item]
                prev_key = prev_keys[item]
                prev = windows.get(prev_key) if prev_key is not None else None
                if prev is None:
                    counts.append(0.0)
                    rates.append(0.0)
                else:
                    if purge_at is None:
                        purge_at = self._purged_through(current())
                    if start <= purge_at:  # the window ending at ``start`` is gone
                        counts.append(0.0)  # as of this record the previous window is gone
                        rates.append(0.0)
                    else:
                        count, cbs = prev[0], prev[2]
                        counts.append(float(count))
                        rates.append(cbs / max(1, count))
                if not lates[item]:
                    # The sum is kept exact, so a window's aggregate does not depend on the
                    # order its transactions arrived in (partitions interleave differently
                    # on a replay).
                    amount = amounts[item]
                    units = units_of(amount)
                    if units is None:
                        units = _remember_units(amount)
                    bump(own_keys[item], merchant_ids[item], start, 1, units, 0)
            elif isinstance(item, Tick):
                update(origin, item.watermark)
                last = purge_at = None
            else:
                assert isinstance(item, CbEnvelope)
                item_key = cb_keys[cbs_seen]
                cbs_seen += 1
                self.at = item.raw
                update(item.raw.source, item.watermark)
                last = purge_at = None
                wm = current()
                start = _window_start(item.cb.event_time)
                if wm != NO_WATERMARK and start + WINDOW_MS + self._lateness <= wm:
                    window = f"[{format_ms(start)}, {format_ms(start + WINDOW_MS)})"
                    dead.append(self._dead_letter(item, f"window {window} already closed"))
                else:
                    bump(item_key, item.cb.merchant_id, start, 0, 0, 1)
        if counts:
            block.features[:, MERCHANT_COLUMN] = counts
            block.features[:, MERCHANT_COLUMN + 1] = rates
        if len(self._cache) > self._cache_max:  # always, without a cache (0)
            self._write_dirty(changes)
            self._cache.clear()  # cheap to refill: a merchant's windows are few and hot
        self._store.write(changes)
        return dead

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
        close_end = keys.timer_range_end(self._close, watermark - self._lateness)
        due = list(self._store.scan(self._close, close_end))
        parsed = [keys.parse_timer_key(key, len(self._close)) for key, _ in due]
        window_keys = [keys.window_key(merchant, end - WINDOW_MS) for end, merchant in parsed]
        windows = self._windows(set(window_keys))
        for (key, _), (end, merchant), window_key in zip(due, parsed, window_keys, strict=True):
            changes[key] = None
            value = windows[window_key]
            if self._purged(end, watermark):
                self._drop(changes, window_key)
            else:
                changes[keys.timer_key(self._purge, end, merchant)] = b""
            if value is not None:
                out.append(self._aggregate(merchant, end - WINDOW_MS, *value))
        purge_end = keys.timer_range_end(self._purge, watermark - self._lateness - RETAIN_MS)
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

    def _purged(self, window_end: int, watermark: int) -> bool:
        """Whether a window ending at ``window_end`` is deleted at ``watermark``."""
        return window_end <= self._purged_through(watermark)

    def _purged_through(self, watermark: int) -> int:
        """The latest end of a window deleted at ``watermark`` (below every end without one)."""
        if watermark == NO_WATERMARK:
            return NO_WATERMARK
        return watermark - self._lateness - RETAIN_MS

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


# Amounts repeat (whole cents, common prices): their units, remembered (up to ``_UNITS_MAX``).
_UNITS: dict[float, int] = {}
_UNITS_MAX = 1 << 16


def _remember_units(amount: float) -> int:
    """:func:`exact_units` of ``amount``, remembered in ``_UNITS``."""
    units = exact_units(amount) if amount else 0
    if len(_UNITS) >= _UNITS_MAX:
        _UNITS.clear()
    _UNITS[amount] = units
    return units


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


def _window_start(t: int) -> int:
    return t - t % WINDOW_MS
