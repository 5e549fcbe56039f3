"""The card engine as it was before its numba kernel: the reference for ``test_card_kernel``.

Pure Python over lists, sums by ``math.fsum``, merchants as strings: the same
contract (``docs/semantics.md``), the same blob format, the same cache, expiry
index and write-back as :mod:`operators.card_features`, computed independently
of the kernel, so the differential test can require equal features, dead
letters and stored state.
"""

from __future__ import annotations

import bisect
import math
import pickle
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import islice

import msgspec

from operators.card_features import CardConfig
from operators.messages import OutMessage, RawRecord, Tick
from operators.watermarks import NO_WATERMARK, MinWatermark
from schemas.records import Transaction
from state import keys
from state.store import StateStore
from tests.unit.operators.blocks import TxnRecord

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR


@dataclass(slots=True)
class Featured:
    """A transaction the reference featured: its card features by name, and the watermark."""

    event_id: str
    features: dict[str, float]
    watermark: int


@dataclass(slots=True)
class _Card:
    # Accepted events as columns, sorted by (time, amount, merchant, event id).
    times: list[int]
    amounts: list[float]
    merchants: list[str]
    ids: list[str]
    sessions: list[list[int]]  # [start, end, count], sorted, disjoint
    expiry: int | None  # the expiry-index time currently written for this card


class ReferenceCardEngine:
    """The card engine in pure Python: features, state, cache, expiry, as the kernel must give."""

    def __init__(
        self,
        config: CardConfig,
        store: StateStore,
        dead_letter: Callable[[RawRecord, str], OutMessage],
        *,
        shard: str = "",
    ) -> None:
        self._lateness = config.time.allowed_lateness_ms
        self._gap = config.session_gap_ms
        self._store = store
        # Shards of one process share the store: each expires only its own cards.
        self._expiry = keys.shard_namespace(keys.CARD_EXPIRY, shard)
        self._dead_letter = dead_letter
        self._cache_max = config.cache_cards
        # Decoded cards, least recently used first; ``_dirty`` ones differ from the store.
        self._cache: dict[str, _Card] = {}
        self._dirty: set[str] = set()
        # The record being processed: the one to blame if processing raises.
        self.at: RawRecord | None = None

    def process(
        self, batch: Iterable[TxnRecord], watermarks: MinWatermark
    ) -> tuple[list[Featured | Tick], list[OutMessage]]:
        """Features for each transaction, in order, and dead letters for duplicates.

        A duplicate leaves a :class:`Tick` in its place, so the watermark it
        carried still reaches the next operator in order.
        """
        batch = list(batch)
        cards, created = self._cards(list(dict.fromkeys(env.txn.card_id for env in batch)))
        dirty = self._dirty
        out: list[Featured | Tick] = []
        dead: list[OutMessage] = []
        update, current = watermarks.update, watermarks.current
        lateness, gap, features = self._lateness, self._gap, self._features
        for env in batch:
            self.at = env.raw
            update(env.raw.source, env.watermark)
            wm = current()
            txn = env.txn
            card_id = txn.card_id
            card = cards[card_id]
            horizon = wm - lateness - DAY if wm != NO_WATERMARK else NO_WATERMARK
            if txn.event_id in card.ids and _is_duplicate(card, txn, horizon):
                dead.append(self._dead_letter(env.raw, "event_id already accepted for this card"))
                out.append(Tick(wm))
                continue
            out.append(Featured(txn.event_id, features(card, env, horizon), wm))
            if not env.late:
                _accept(card, txn.event_time, txn.amount, txn.merchant_id, txn.event_id, gap)
                dirty.add(card_id)
            if card_id in dirty:
                _prune(card, horizon)
        if self._cache_max <= 0:
            self.flush()
            return out, dead
        self._index(created)
        if len(self._cache) > self._cache_max:
            self._evict(len(self._cache) - self._cache_max * 9 // 10)
        return out, dead

    def flush(self) -> None:
        """Write every changed card (and its expiry-index entry) to the store in one batch."""
        if self._dirty:
            self._write(self._dirty)
            self._dirty = set()
        if self._cache_max <= 0:
            self._cache.clear()

    def expire(self, watermark: int) -> int:
        """Delete cards whose newest event fell below the horizon; return how many."""
        if watermark == NO_WATERMARK:
            return 0
        due = watermark - 1
        end = keys.timer_range_end(self._expiry, due)
        changes: dict[bytes, bytes | None] = {}
        expired = 0
        for key, _ in self._store.scan(self._expiry, end):
            _, card_id = keys.parse_timer_key(key, len(self._expiry))
            changes[key] = None
            card = self._cache.get(card_id)
            if card is not None and card_id in self._dirty:
                # Changed since its index entry was written: if its newest time moved
                # on, the entry is stale; index it at its current time instead.
                expiry = self._expiry_time(card)
                if expiry is not None and expiry > due:
                    self._move_index(changes, card_id, card, expiry)
                    continue
                self._dirty.discard(card_id)
            self._cache.pop(card_id, None)
            changes[keys.card_key(card_id)] = None
            expired += 1
        self._store.write(changes)
        return expired

    def _cards(self, ids: list[str]) -> tuple[dict[str, _Card], list[str]]:
        """The batch's cards, and those new to the store.

        Cached cards become the most recent; the rest are read in one multi-get.
        """
        cache = self._cache
        out: dict[str, _Card] = {}
        missing: list[str] = []
        created: list[str] = []
        for card_id in ids:
            card = cache.pop(card_id, None)
            if card is None:
                missing.append(card_id)
            else:
                cache[card_id] = out[card_id] = card
        if missing:
            blobs = self._store.get_many([keys.card_key(c) for c in missing])
            for card_id, blob in zip(missing, blobs, strict=True):
                cache[card_id] = out[card_id] = _load(blob)
                if blob is None:
                    created.append(card_id)
        return out, created

    def _index(self, created: list[str]) -> None:
        """Give new cached cards their expiry-index entry now, so :meth:`expire` finds them.

        Every stored or cached card thus has an entry no later than its true expiry
        time; :meth:`expire` moves an entry that falls due before the card does.
        """
        changes: dict[bytes, bytes | None] = {}
        for card_id in created:
            card = self._cache.get(card_id)
            if card is not None and card.expiry is None:
                self._move_index(changes, card_id, card, self._expiry_time(card))
        if changes:
            self._store.write(changes)

    def _evict(self, count: int) -> None:
        """Drop the ``count`` least recently used cards, writing back the changed ones."""
        victims = list(islice(self._cache, count))
        changed = [c for c in victims if c in self._dirty]
        if changed:
            self._write(changed)
            self._dirty.difference_update(changed)
        for card_id in victims:
            del self._cache[card_id]

    def _features(self, card: _Card, env: TxnRecord, horizon: int) -> dict[str, float]:
        txn = env.txn
        t = txn.event_time
        amount = txn.amount
        times = card.times
        hi = bisect.bisect_right(times, t)
        lo_all = bisect.bisect_left(times, horizon, 0, hi)
        # The windows nest (1m in 5m in 1h in 24h) and all end at ``hi``: take the 24 h
        # amounts once and each shorter window as a tail of them.
        lo_day = max(lo_all, bisect.bisect_right(times, t - DAY, 0, hi))
        if lo_day >= hi:
            total = 0.0 + amount  # an empty sum plus the amount, as below (-0.0 -> 0.0)
            feats = {
                "card_count_1m": 1.0,
                "card_amount_1m": total,
                "card_count_5m": 1.0,
                "card_amount_5m": total,
                "card_count_1h": 1.0,
                "card_amount_1h": total,
                "card_distinct_merchants_1h": 1.0,
                "card_count_24h": 1.0,
                "card_amount_24h": total,
                "card_amount_zscore": 0.0,
            }
        else:
            amounts = card.amounts[lo_day:hi]
            lo_min = bisect.bisect_right(times, t - MINUTE, lo_day, hi) - lo_day
            lo_5m = bisect.bisect_right(times, t - 5 * MINUTE, lo_day, hi) - lo_day
            lo_hour = bisect.bisect_right(times, t - HOUR, lo_day, hi)
            merchants = set(card.merchants[lo_hour:hi])
            merchants.add(txn.merchant_id)
            lo_hour -= lo_day
            n = len(amounts)
            day_sum = math.fsum(amounts)
            feats = {
                "card_count_1m": float(n - lo_min + 1),
                "card_amount_1m": math.fsum(amounts[lo_min:]) + amount,
                "card_count_5m": float(n - lo_5m + 1),
                "card_amount_5m": math.fsum(amounts[lo_5m:]) + amount,
                "card_count_1h": float(n - lo_hour + 1),
                "card_amount_1h": math.fsum(amounts[lo_hour:]) + amount,
                "card_distinct_merchants_1h": float(len(merchants)),
                "card_count_24h": float(n + 1),
                "card_amount_24h": day_sum + amount,
                "card_amount_zscore": _zscore(amount, amounts, day_sum),
            }
        feats["card_seconds_since_last"] = (t - times[hi - 1]) / 1000 if hi > lo_all else -1.0
        start, end, count = t, t, 1
        gap = self._gap
        for s_start, s_end, s_count in card.sessions:
            if s_end < horizon:
                continue
            if s_start - gap <= t <= s_end + gap:
                start, end, count = min(start, s_start), max(end, s_end), count + s_count
        feats["card_session_count"] = float(count)
        feats["card_session_seconds"] = (end - start) / 1000
        return feats

    def _expiry_time(self, card: _Card) -> int | None:
        """When the card leaves the state: its newest event or session end, plus retention."""
        newest = card.times[-1] if card.times else NO_WATERMARK
        for s in card.sessions:
            if s[1] > newest:
                newest = s[1]
        return newest + self._lateness + DAY if newest != NO_WATERMARK else None

    def _move_index(
        self, changes: dict[bytes, bytes | None], card_id: str, card: _Card, expiry: int | None
    ) -> None:
        """Move the card's expiry-index entry to ``expiry`` (None: no entry); keep ``expiry``."""
        if card.expiry is not None:
            changes[keys.timer_key(self._expiry, card.expiry, card_id)] = None
        if expiry is not None:
            changes[keys.timer_key(self._expiry, expiry, card_id)] = b""
        card.expiry = expiry

    def _write(self, card_ids: Iterable[str]) -> None:
        changes: dict[bytes, bytes | None] = {}
        cache = self._cache
        for card_id in card_ids:
            card = cache[card_id]
            expiry = self._expiry_time(card)
            if card.expiry != expiry:
                self._move_index(changes, card_id, card, expiry)
            if card.times or card.sessions:
                changes[keys.card_key(card_id)] = _dump(card)
            else:
                changes[keys.card_key(card_id)] = None
        self._store.write(changes)


def _is_duplicate(card: _Card, txn: Transaction, horizon: int) -> bool:
    times, event_id, event_time = card.times, txn.event_id, txn.event_time
    for i, e_id in enumerate(card.ids):
        if e_id == event_id and abs(times[i] - event_time) <= DAY and times[i] >= horizon:
            return True
    return False


def _accept(card: _Card, t: int, amount: float, merchant: str, event_id: str, gap: int) -> None:
    times = card.times
    i = bisect.bisect_right(times, t)
    if i and times[i - 1] == t:  # ties keep the (time, amount, merchant, id) order
        i = bisect.bisect_left(times, t)
        row = (amount, merchant, event_id)
        while (
            i < len(times)
            and times[i] == t
            and (card.amounts[i], card.merchants[i], card.ids[i]) <= row
        ):
            i += 1
    times.insert(i, t)
    card.amounts.insert(i, amount)
    card.merchants.insert(i, merchant)
    card.ids.insert(i, event_id)
    merged = [t, t, 1]
    keep = []
    for s in card.sessions:
        if s[0] - gap <= t <= s[1] + gap:
            merged = [min(merged[0], s[0]), max(merged[1], s[1]), merged[2] + s[2]]
        else:
            keep.append(s)
    bisect.insort(keep, merged)
    card.sessions = keep


def _prune(card: _Card, horizon: int) -> None:
    times = card.times
    if times and times[0] < horizon:
        cut = bisect.bisect_left(times, horizon)
        del times[:cut], card.amounts[:cut], card.merchants[:cut], card.ids[:cut]
    for s in card.sessions:
        if s[1] < horizon:
            card.sessions = [s for s in card.sessions if s[1] >= horizon]
            break


def _zscore(amount: float, earlier: list[float], total: float) -> float:
    """Population z-score of ``amount`` against ``earlier``, whose exact sum is ``total``."""
    n = len(earlier)
    if n < 2 or earlier.count(earlier[0]) == n:
        # Equal amounts have std exactly 0; float rounding of their mean would not say so.
        return 0.0
    mean = total / n
    var = math.fsum([(d := a - mean) * d for a in earlier]) / n
    std = math.sqrt(var)
    return 0.0 if std == 0 else (amount - mean) / std


def _load(blob: bytes | None) -> _Card:
    if blob is None:
        return _Card([], [], [], [], [], None)
    if blob[0] == 0x94:  # the packed layout: a msgpack array of four
        data, distinct, ids, expiry = msgspec.msgpack.decode(blob)
        n = len(ids)
        ints = array("q", data)
        amounts = array("d", data[8 * n : 16 * n]).tolist()
        merchants = [distinct[i] for i in ints[2 * n : 3 * n]]
        flat = ints[3 * n :].tolist()
        sessions = [flat[j : j + 3] for j in range(0, len(flat), 3)]
        return _Card(ints[:n].tolist(), amounts, merchants, ids, sessions, expiry)
    state = pickle.loads(blob)
    if len(state) == 3:  # the row layout, (events, sessions, expiry): read it as columns
        events, sessions, expiry = state
        return _Card(
            [e[0] for e in events],
            [e[1] for e in events],
            [e[2] for e in events],
            [e[3] for e in events],
            sessions,
            expiry,
        )
    times, amounts, merchants, ids, sessions, expiry = state
    return _Card(times, amounts, merchants, ids, sessions, expiry)


def _dump(card: _Card) -> bytes:
    """The packed layout (``operators.card_features._dump``), written from its description."""
    distinct = list(dict.fromkeys(card.merchants))
    index = {m: i for i, m in enumerate(distinct)}
    data = (
        array("q", card.times).tobytes()
        + array("d", card.amounts).tobytes()
        + array("q", [index[m] for m in card.merchants]).tobytes()
        + array("q", [x for s in card.sessions for x in s]).tobytes()
    )
    return msgspec.msgpack.encode((data, distinct, card.ids, card.expiry))
