"""Per-card sliding windows, sessions, z-score and duplicate detection over the state store.

Time rules (``docs/semantics.md``): windows are record-anchored, ``t - W <
event_time <= t``, over the card's accepted ("seen") events plus the event
itself. Late events are scored from current state and change nothing;
duplicates (same card and ``event_id`` within 24 h of an accepted one) become
dead letters. The card operator's watermark is the minimum over the input
partitions it has heard from (idle ones left out).

State lifetime: one blob per card holds its accepted events with event time
``>= wm - lateness - 24h`` and its session summaries with end at or above that same
horizon; an expiry index (``E`` + time + card) deletes a card whose
newest event fell below that horizon, so state stays bounded on an endless
stream. Each input batch costs one multi-get and one atomic write.
"""

from __future__ import annotations

import bisect
import math
import pickle
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from operators.messages import Featured, OutMessage, Tick, TxnEnvelope
from operators.watermarks import NO_WATERMARK, MinWatermark, TimeConfig
from state import keys
from state.store import StateStore

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
SLIDING = (("1m", MINUTE), ("5m", 5 * MINUTE), ("1h", HOUR), ("24h", DAY))
CARD_FEATURES: tuple[str, ...] = (
    *(f"card_count_{n}" for n, _ in SLIDING),
    *(f"card_amount_{n}" for n, _ in SLIDING),
    "card_distinct_merchants_1h",
    "card_seconds_since_last",
    "card_amount_zscore",
    "card_session_count",
    "card_session_seconds",
)


@dataclass(frozen=True, kw_only=True)
class CardConfig:
    """Time bounds and the session gap."""

    time: TimeConfig
    session_gap_ms: int = 30 * MINUTE


# One accepted event: (event_time, amount, merchant_id, event_id). Sorted by time.
_Event = tuple[int, float, str, str]


@dataclass
class _Card:
    events: list[_Event]
    sessions: list[list[int]]  # [start, end, count], sorted, disjoint
    expiry: int | None  # the expiry-index time currently written for this card


class CardFeatureEngine:
    """Computes card features for batches of transactions and keeps card state."""

    def __init__(
        self,
        config: CardConfig,
        store: StateStore,
        dead_letter: Callable[[TxnEnvelope, str], OutMessage],
        *,
        shard: str = "",
    ) -> None:
        self._lateness = config.time.allowed_lateness_ms
        self._gap = config.session_gap_ms
        self._store = store
        # Shards of one process share the store: each expires only its own cards.
        self._expiry = keys.shard_namespace(keys.CARD_EXPIRY, shard)
        self._dead_letter = dead_letter

    def process(
        self, batch: Iterable[TxnEnvelope], watermarks: MinWatermark
    ) -> tuple[list[Featured | Tick], list[OutMessage]]:
        """Features for each transaction, in order, and dead letters for duplicates.

        A duplicate leaves a :class:`Tick` in its place, so the watermark it
        carried still reaches the next operator in order.
        """
        batch = list(batch)
        ids = list(dict.fromkeys(env.txn.card_id for env in batch))
        blobs = self._store.get_many([keys.card_key(c) for c in ids])
        cards = {c: _load(b) for c, b in zip(ids, blobs, strict=True)}
        dirty: set[str] = set()
        out: list[Featured | Tick] = []
        dead: list[OutMessage] = []
        update, current = watermarks.update, watermarks.current
        for env in batch:
            update(env.raw.source, env.watermark)
            wm = current()
            card_id = env.txn.card_id
            card = cards[card_id]
            horizon = wm - self._lateness - DAY if wm != NO_WATERMARK else NO_WATERMARK
            if card.events and _is_duplicate(card, env, horizon):
                dead.append(self._dead_letter(env, "event_id already accepted for this card"))
                out.append(Tick(wm))
                continue
            out.append(Featured(env, self._features(card, env, horizon), wm))
            if not env.late:
                _accept(card, env, self._gap)
                dirty.add(card_id)
            if card_id in dirty:
                _prune(card, horizon)
        self._commit(cards, dirty)
        return out, dead

    def expire(self, watermark: int) -> int:
        """Delete cards whose newest event fell below the horizon; return how many."""
        if watermark == NO_WATERMARK:
            return 0
        due = watermark - 1
        end = keys.timer_range_end(self._expiry, due)
        changes: dict[bytes, bytes | None] = {}
        for key, _ in self._store.scan(self._expiry, end):
            _, card_id = keys.parse_timer_key(key, len(self._expiry))
            changes[key] = None
            changes[keys.card_key(card_id)] = None
        self._store.write(changes)
        return len(changes) // 2

    def _features(self, card: _Card, env: TxnEnvelope, horizon: int) -> dict[str, float]:
        txn = env.txn
        t = txn.event_time
        amount = txn.amount
        events = card.events
        times = [e[0] for e in events]
        hi = bisect.bisect_right(times, t)
        lo_all = bisect.bisect_left(times, horizon)
        # The windows nest (1m in 5m in 1h in 24h) and all end at ``hi``: take the 24 h
        # amounts once and each shorter window as a tail of them.
        lo_day = max(lo_all, bisect.bisect_right(times, t - DAY))
        if lo_day >= hi:
            total = math.fsum(()) + amount
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
            amounts = [e[1] for e in events[lo_day:hi]]
            lo_min = max(lo_all, bisect.bisect_right(times, t - MINUTE), lo_day) - lo_day
            lo_5m = max(lo_all, bisect.bisect_right(times, t - 5 * MINUTE), lo_day) - lo_day
            lo_hour = max(lo_all, bisect.bisect_right(times, t - HOUR), lo_day)
            merchants = {e[2] for e in events[lo_hour:hi]}
            merchants.add(txn.merchant_id)
            lo_hour -= lo_day
            n = len(amounts)
            feats = {
                "card_count_1m": float(n - lo_min + 1),
                "card_amount_1m": math.fsum(amounts[lo_min:]) + amount,
                "card_count_5m": float(n - lo_5m + 1),
                "card_amount_5m": math.fsum(amounts[lo_5m:]) + amount,
                "card_count_1h": float(n - lo_hour + 1),
                "card_amount_1h": math.fsum(amounts[lo_hour:]) + amount,
                "card_distinct_merchants_1h": float(len(merchants)),
                "card_count_24h": float(n + 1),
                "card_amount_24h": math.fsum(amounts) + amount,
                "card_amount_zscore": _zscore(amount, amounts),
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

    def _commit(self, cards: dict[str, _Card], dirty: set[str]) -> None:
        changes: dict[bytes, bytes | None] = {}
        for card_id in dirty:
            card = cards[card_id]
            newest = card.events[-1][0] if card.events else NO_WATERMARK
            for s in card.sessions:
                if s[1] > newest:
                    newest = s[1]
            expiry = newest + self._lateness + DAY if newest != NO_WATERMARK else None
            if card.expiry != expiry:
                if card.expiry is not None:
                    changes[keys.timer_key(self._expiry, card.expiry, card_id)] = None
                if expiry is not None:
                    changes[keys.timer_key(self._expiry, expiry, card_id)] = b""
                card.expiry = expiry
            if card.events or card.sessions:
                changes[keys.card_key(card_id)] = _dump(card)
            else:
                changes[keys.card_key(card_id)] = None
        self._store.write(changes)


def _is_duplicate(card: _Card, env: TxnEnvelope, horizon: int) -> bool:
    event_id = env.txn.event_id
    for e in card.events:
        if e[3] == event_id and abs(e[0] - env.txn.event_time) <= DAY and e[0] >= horizon:
            return True
    return False


def _accept(card: _Card, env: TxnEnvelope, gap: int) -> None:
    txn = env.txn
    t = txn.event_time
    bisect.insort(card.events, (t, txn.amount, txn.merchant_id, txn.event_id))
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
    events = card.events
    if events and events[0][0] < horizon:
        del events[: bisect.bisect_left(events, (horizon,))]
    for s in card.sessions:
        if s[1] < horizon:
            card.sessions = [s for s in card.sessions if s[1] >= horizon]
            break


def _zscore(amount: float, earlier: list[float]) -> float:
    n = len(earlier)
    if n < 2 or min(earlier) == max(earlier):
        # Equal amounts have std exactly 0; float rounding of their mean would not say so.
        return 0.0
    mean = math.fsum(earlier) / n
    var = math.fsum([(a - mean) ** 2 for a in earlier]) / n
    std = math.sqrt(var)
    return 0.0 if std == 0 else (amount - mean) / std


def _load(blob: bytes | None) -> _Card:
    if blob is None:
        return _Card([], [], None)
    events, sessions, expiry = pickle.loads(blob)
    return _Card(events, sessions, expiry)


def _dump(card: _Card) -> bytes:
    return pickle.dumps((card.events, card.sessions, card.expiry), protocol=5)
