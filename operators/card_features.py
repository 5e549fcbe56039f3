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
stream.

Cache: each engine keeps up to ``cache_cards`` decoded cards in memory, evicting
the longest cached first but passing over (and keeping) those used since they were
cached or last passed over, and writes a changed card back only when it is
evicted or at :meth:`CardFeatureEngine.flush` (the shard's snapshot when
recovery is on, and the end of the input when the store outlives the run), so a
card seen again is neither read nor decoded nor rewritten per event; misses
cost one multi-get per batch. With ``cache_cards=0`` every batch is written
through. A cached card is one packed array (times, amounts, interned merchant
codes, event id hashes, sessions), plus its event ids; the array's header also
says whether the card changed since it was stored and the last batch that used
it, so a batch looks each of its cards up once and the kernels keep the rest.
The store keeps the packed layout (:func:`_dump`, msgpack): the buffer's filled
slots as bytes, the card's distinct merchant ids, its event ids and its expiry,
either way; the pickled list layouts before it are still read.

A batch is columns the kernel reads in one call (:func:`operators.card_kernel.card_run`)
for every row but the few it leaves here: a possible duplicate (its id's hash is
among its card's) and a tie on event time, decided in Python as the
contract words them. Cards get room for their rows before the call; the rows'
results then place their event ids.
"""

from __future__ import annotations

import pickle
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import islice, repeat
from operator import attrgetter, is_not
from typing import Any, cast

import msgspec
import numpy as np

from operators import card_kernel as kernel
from operators.card_kernel import (
    CAP,
    CAP_S,
    COLUMNS,
    DIRTY,
    HEAD,
    NS,
    POSITION_BITS,
    POSITION_MASK,
    SLOW,
    USED,
    N,
)
from operators.columns import BLOCK_COLUMNS
from operators.messages import FeatureBlock, OutMessage, RawRecord, TxnColumns
from operators.watermarks import NO_WATERMARK, MinWatermark, TimeConfig
from schemas.errors import REBUILD_HINT, StateError
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
    # Decoded cards kept in memory per engine (0: read and write RocksDB every batch).
    cache_cards: int = 0


# One transaction as the card engine places it: time, amount, merchant, event id.
_Event = tuple[int, float, str, str]

# Past this many interned merchant ids the engine writes back and forgets its cached
# cards and starts the codes afresh, so the table stays bounded on an endless stream.
MERCHANT_CODES_MAX = 1 << 18

# A card blob in the packed layout (:func:`_dump`) is a msgpack array of four: its
# first byte tells it from the pickles of the list layouts (0x80, pickle's PROTO).
PACKED = 0x94
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(tuple[bytes, list[str], list[str], int | None])


class _Card:
    """A cached card: its packed buffer, its events' ids, its expiry-index time.

    ``addr`` is where the buffer's data starts: :func:`operators.card_kernel.card_run`
    reaches the buffer there. Assigning ``buf`` sets it, so no new buffer can leave a
    stale address behind; the card holds the buffer, so the address stays valid.
    """

    __slots__ = ("_buf", "addr", "expiry", "ids", "placed")

    def __init__(
        self, buf: np.ndarray[Any, np.dtype[np.int64]], ids: list[str], expiry: int | None
    ) -> None:
        self.buf = buf  # packed events and sessions (layout: operators.card_kernel)
        self.ids = ids  # the events' ids, in the buffer's order
        self.expiry = expiry  # the expiry-index time currently written for this card
        # The engine's batch count when the card took its place in the cache's order.
        self.placed = 0

    @property
    def buf(self) -> np.ndarray[Any, np.dtype[np.int64]]:
        return self._buf

    @buf.setter
    def buf(self, buf: np.ndarray[Any, np.dtype[np.int64]]) -> None:
        self._buf = buf
        self.addr: int = kernel.address(buf)


_ADDR = attrgetter("addr")
_IDS = attrgetter("ids")


class _Merchants:
    """Merchant ids as the integer codes the kernel compares (distinct merchants)."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.names: list[str] = []

    def codes_of(self, merchants: list[str]) -> list[int]:
        """The code of each of ``merchants``."""
        got: list[int | None] = list(map(self.codes.get, merchants))
        if None in got:
            code = self.code
            return [code(m) if c is None else c for m, c in zip(merchants, got, strict=True)]
        return cast(list[int], got)

    def code(self, merchant: str) -> int:
        code = self.codes.get(merchant)
        if code is None:
            code = self.codes[merchant] = len(self.names)
            self.names.append(merchant)
        return code


class CardFeatureEngine:
    """Computes card features for batches of transactions and keeps card state."""

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
        # Decoded cards, in the order they took their place (:meth:`_evict`); each
        # buffer's header holds the last batch that used it.
        self._cache: dict[str, _Card] = {}
        self._batches = 0
        # The cached cards that differ from the store: those whose header says ``DIRTY``.
        self._dirty: dict[str, _Card] = {}
        self._merchants = _Merchants()
        # The record being processed: the one to blame if processing raises.
        self.at: RawRecord | None = None
        kernel.compile_kernels()

    def process(
        self, batch: TxnColumns, watermarks: MinWatermark
    ) -> tuple[FeatureBlock, list[OutMessage]]:
        """The batch's featured transactions, in order, and dead letters for duplicates.

        The block's card columns are filled, one row per transaction that is not
        a duplicate; a duplicate leaves a tick in its place, so the watermark it
        carried still reaches the next operator in order.
        """
        if len(self._merchants.names) > MERCHANT_CODES_MAX:
            self._recode()
        self._batches += 1
        n = len(batch)
        # Passes over the batch's columns run in C (map over a bound method), not per row here.
        counts = Counter(batch.card_id)
        card_ids = list(counts)
        batch_cards, created = self._cards(card_ids, counts)
        index = dict(zip(card_ids, range(len(card_ids)), strict=True))
        card_rows = list(map(index.__getitem__, batch.card_id))
        row_cards = list(map(batch_cards.__getitem__, card_rows))
        rows = np.empty((n, 6), np.int64)
        rows[:, kernel.CARD] = card_rows
        rows[:, kernel.TIME] = batch.event_time
        rows[:, kernel.MERCHANT] = self._merchants.codes_of(batch.merchant_id)
        wms = watermarks.advance([raw.source for raw in batch.raw], batch.watermark)
        rows[:, kernel.HORIZON] = np.where(
            wms == NO_WATERMARK, NO_WATERMARK, wms - self._lateness - DAY
        )
        # A transaction whose id's hash its card holds may be a duplicate: the kernel
        # leaves those to :meth:`_one`.
        rows[:, kernel.KEY] = list(map(hash, batch.event_id))
        rows[:, kernel.FLAGS] = np.logical_not(batch.late) * kernel.ACCEPT
        amounts = np.array(batch.amount, np.float64)
        addresses = np.array(list(map(_ADDR, batch_cards)), np.int64)
        self._make_room(batch_cards, addresses, list(counts.values()))
        turned = np.zeros(len(card_ids), np.bool_)  # the cards that were clean and changed
        results = np.full(n, kernel.UNSET, np.int64)
        # One row of features per scored transaction; the kernel fills its card columns.
        matrix = np.empty((n, len(BLOCK_COLUMNS)))
        dead: list[OutMessage] = []
        duplicates: list[int] = []
        ticks: list[tuple[int, int]] = []
        i = row = done = 0
        while True:
            try:
                stop = kernel.card_run(
                    addresses, rows, amounts, turned, matrix, row, results, self._gap, i
                )
            except Exception:
                # Blame the row the kernel was at: the first it wrote no result for.
                self.at = batch.raw[i + int(np.argmax(results[i:] == kernel.UNSET))]
                raise
            row += stop - i
            if stop == n:
                break
            # The ids of the rows taken so far, so the row left over finds its card's.
            _place_ids(row_cards, batch.event_id, results, done, stop)
            done, i = stop, stop + 1
            k = int(rows[stop, kernel.CARD])
            card = batch_cards[k]
            self.at = batch.raw[stop]
            if rows[stop, kernel.FLAGS] & kernel.STOP:
                result = self._one(card, batch, stop, rows[stop], turned, matrix, row)
                if result is None:
                    dead.append(
                        self._dead_letter(
                            batch.raw[stop], "event_id already accepted for this card"
                        )
                    )
                    duplicates.append(stop)
                    ticks.append((row, int(wms[stop])))
                    results[stop] = 0
                    continue
            else:  # the kernel wrote its features but left accepting it here
                result = self._accept(
                    card,
                    (
                        batch.event_time[stop],
                        batch.amount[stop],
                        batch.merchant_id[stop],
                        batch.event_id[stop],
                    ),
                    int(rows[stop, kernel.MERCHANT]),
                    int(rows[stop, kernel.HORIZON]),
                    True,
                    matrix,
                    row,
                )
            addresses[k] = card.addr
            results[stop] = result + 1 if rows[stop, kernel.FLAGS] & kernel.ACCEPT else result
            row += 1
        _place_ids(row_cards, batch.event_id, results, done, n)
        self.at = batch.raw[-1] if n else None
        for k in np.flatnonzero(turned).tolist():
            self._dirty[card_ids[k]] = batch_cards[k]
        if duplicates:
            kept = np.ones(n, np.bool_)
            kept[duplicates] = False
            txns = batch.take(np.flatnonzero(kept).tolist())
            marks = wms[kept]
        else:
            txns, marks = batch, wms
        block = FeatureBlock(txns, matrix[:row], marks, ticks)
        if self._cache_max <= 0:
            self.flush()
            return block, dead
        self._index(created)
        if len(self._cache) > self._cache_max:
            self._evict(len(self._cache) - self._cache_max * 9 // 10)
        return block, dead

    def _make_room(
        self,
        cards: list[_Card],
        addresses: np.ndarray[Any, np.dtype[np.int64]],
        counts: list[int],
    ) -> None:
        """Give each of ``cards`` (at ``addresses``, in order) room for its ``counts``
        transactions in the batch, so the kernel runs on; mark them used by this batch.

        A card short of room gets twice its room (or what the batch needs), at least.
        """
        short = kernel.short_of_room(addresses, np.array(counts, np.int64), self._batches)
        for k in short.tolist():
            card = cards[k]
            card.buf = kernel.grown(card.buf, counts[k])
            addresses[k] = card.addr

    def _one(
        self,
        card: _Card,
        batch: TxnColumns,
        i: int,
        row_in: np.ndarray[Any, np.dtype[np.int64]],
        turned: np.ndarray[Any, np.dtype[np.bool_]],
        out: np.ndarray[Any, np.dtype[np.float64]],
        row: int,
    ) -> int | None:
        """Row ``i`` of ``batch`` as :func:`operators.card_kernel.card_run` takes one, or
        None when it is a duplicate."""
        t, event_id = batch.event_time[i], batch.event_id[i]
        horizon = int(row_in[kernel.HORIZON])
        if event_id in card.ids and _is_duplicate(card, event_id, t, horizon):
            return None
        code = int(row_in[kernel.MERCHANT])
        accept = bool(row_in[kernel.FLAGS] & kernel.ACCEPT)
        if accept and not card.buf[DIRTY]:
            card.buf[DIRTY] = 1
            turned[row_in[kernel.CARD]] = True
        prune = bool(card.buf[DIRTY])
        amount = float(batch.amount[i])  # the kernels are compiled for float64 only
        key = int(row_in[kernel.KEY])
        done: int = kernel.card_step(
            card.buf, out, row, t, amount, code, key, horizon, self._gap, accept, prune
        )
        if done == SLOW:
            done = self._accept(
                card, (t, amount, batch.merchant_id[i], event_id), code, horizon, prune, out, row
            )
        return done

    def flush(self) -> None:
        """Write every changed card (and its expiry-index entry) to the store in one batch."""
        if self._dirty:
            self._write(self._dirty.items())
            self._dirty = {}
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
                del self._dirty[card_id]
            self._cache.pop(card_id, None)
            changes[keys.card_key(card_id)] = None
            expired += 1
        self._store.write(changes)
        return expired

    def _cards(self, card_ids: list[str], counts: dict[str, int]) -> tuple[list[_Card], list[str]]:
        """The cards of ``card_ids`` (``counts``: how many of the batch's transactions
        each has), in order, and the ids of those new.

        Cached cards are found with one lookup each (:meth:`_make_room` marks them
        used); the rest are read in one multi-get, with room for the batch's
        transactions, and cached last.
        """
        cache = self._cache
        found: list[_Card | None] = list(map(cache.get, card_ids))
        hits = list(map(is_not, found, repeat(None)))
        cards = cast(list[_Card], found)  # Nones where ``hits`` is False, filled below
        created: list[str] = []
        if not all(hits):
            at = [k for k, hit in enumerate(hits) if not hit]
            missing = [card_ids[k] for k in at]
            blobs = self._store.get_many([keys.card_key(c) for c in missing])
            for k, card_id, blob in zip(at, missing, blobs, strict=True):
                found[k] = cache[card_id] = card = _load(blob, self._merchants, counts[card_id])
                card.placed = self._batches
                if blob is None:
                    created.append(card_id)
        return cards, created

    def _index(self, created: list[str]) -> None:
        """Give new cached cards their expiry-index entry now, so :meth:`expire` finds them.

        Every stored or cached card thus has an entry no later than its true expiry
        time; :meth:`expire` moves an entry that falls due before the card does.
        """
        changes: dict[bytes, bytes | None] = {}
        cache = self._cache
        new = [
            (card_id, card)
            for card_id in created
            if (card := cache.get(card_id)) is not None and card.expiry is None
        ]
        expiries = self._expiry_times([card for _, card in new])
        for (card_id, card), expiry in zip(new, expiries, strict=True):
            self._move_index(changes, card_id, card, expiry)
        if changes:
            self._store.write(changes)

    def _evict(self, count: int) -> None:
        """Drop ``count`` cards, writing back the changed ones.

        The cards go in the order they took their place, but one used since then gets
        a second chance: it takes a new place, last, instead. So a card in use stays
        without every batch moving its cards to the end of the order.
        """
        cache, dirty, now = self._cache, self._dirty, self._batches
        victims: list[tuple[str, _Card]] = []
        while len(victims) < count:
            for card_id, card in list(islice(cache.items(), count - len(victims))):
                del cache[card_id]
                if card.buf[USED] > card.placed:
                    card.placed = now
                    cache[card_id] = card
                else:
                    victims.append((card_id, card))
        changed = [(card_id, card) for card_id, card in victims if card_id in dirty]
        if changed:
            self._write(changed)
            for card_id, _ in changed:
                del dirty[card_id]

    def _accept(
        self,
        card: _Card,
        txn: _Event,
        code: int,
        horizon: int,
        prune: bool,
        out: np.ndarray[Any, np.dtype[np.float64]],
        row: int,
    ) -> int:
        """Accept ``txn`` where the kernel would not: a tie on its time, or a full buffer.

        Returns what :func:`operators.card_kernel.card_step` would have returned.
        """
        n, cap, ns, cap_s = card.buf[: CAP_S + 1].tolist()
        t, amount, key = txn[0], float(txn[1]), hash(txn[3])
        if n == cap or ns == cap_s:
            card.buf = kernel.grown(card.buf, 1)
            # With room, the kernel accepts it (and writes the same features again)
            # unless its time ties.
            done: int = kernel.card_step(
                card.buf, out, row, t, amount, code, key, horizon, self._gap, True, prune
            )
            if done != SLOW:
                return done
        pos = _position(card, txn, self._merchants.names)
        placed: int = kernel.card_place(
            card.buf, pos, t, amount, code, key, self._gap, horizon, prune
        )
        return placed

    def _recode(self) -> None:
        """Write back and forget every cached card, and number the merchants afresh."""
        self._evict(len(self._cache))
        self._merchants = _Merchants()

    def _expiry_time(self, card: _Card) -> int | None:
        """When the card leaves the state: its newest event or session end, plus retention."""
        return self._expiry_times([card])[0]

    def _expiry_times(self, cards: list[_Card]) -> list[int | None]:
        """:meth:`_expiry_time` of each of ``cards``, in one kernel call."""
        if not cards:
            return []
        addresses = np.array([card.addr for card in cards], np.int64)
        retention = self._lateness + DAY
        return [
            None if t == NO_WATERMARK else t + retention
            for t in kernel.newest(addresses, NO_WATERMARK).tolist()
        ]

    def _move_index(
        self, changes: dict[bytes, bytes | None], card_id: str, card: _Card, expiry: int | None
    ) -> None:
        """Move the card's expiry-index entry to ``expiry`` (None: no entry); keep ``expiry``."""
        if card.expiry is not None:
            changes[keys.timer_key(self._expiry, card.expiry, card_id)] = None
        if expiry is not None:
            changes[keys.timer_key(self._expiry, expiry, card_id)] = b""
        card.expiry = expiry

    def _write(self, cards_of: Iterable[tuple[str, _Card]]) -> None:
        """Write ``cards_of``' cards (id and card) and mark them clean."""
        changes: dict[bytes, bytes | None] = {}
        names = self._merchants.names
        cards = list(cards_of)
        expiries = self._expiry_times([card for _, card in cards])
        for (card_id, card), expiry in zip(cards, expiries, strict=True):
            if card.expiry != expiry:
                self._move_index(changes, card_id, card, expiry)
            # No expiry time: no events nor sessions left.
            changes[keys.card_key(card_id)] = None if expiry is None else _dump(card, names)
            card.buf[DIRTY] = 0
        self._store.write(changes)


def _place_ids(
    cards: list[_Card],
    event_ids: list[str],
    results: np.ndarray[Any, np.dtype[np.int64]],
    lo: int,
    hi: int,
) -> None:
    """Apply rows ``lo`` to ``hi``'s :func:`operators.card_kernel.card_run` results to
    their cards' ids: the accepted event's id in its place, the pruned ones gone."""
    # Results split into positions and prune counts in numpy, and each card's ids list
    # fetched in C, so the per-row Python work is the list edits alone.
    part = results[lo:hi]
    for ids, event_id, position, pruned in zip(
        map(_IDS, cards[lo:hi]),
        event_ids[lo:hi],
        (part & POSITION_MASK).tolist(),
        (part >> POSITION_BITS).tolist(),
        strict=True,
    ):
        if position:
            ids.insert(position - 1, event_id)
        if pruned:
            del ids[:pruned]


def _is_duplicate(card: _Card, event_id: str, event_time: int, horizon: int) -> bool:
    times = card.buf[HEAD : HEAD + len(card.ids)].tolist()
    for i, e_id in enumerate(card.ids):
        if e_id == event_id and abs(times[i] - event_time) <= DAY and times[i] >= horizon:
            return True
    return False


def _position(card: _Card, txn: _Event, names: list[str]) -> int:
    """Where ``txn`` goes among the card's events, ties in (time, amount, merchant, id) order."""
    buf, t = card.buf, txn[0]
    n, cap = int(buf[N]), int(buf[CAP])
    times = buf[HEAD : HEAD + n]
    i = int(np.searchsorted(times, t, "right"))
    if i and times[i - 1] == t:
        i = int(np.searchsorted(times, t, "left"))
        amounts = buf[HEAD + cap : HEAD + cap + n].view(np.float64)
        codes = buf[HEAD + 2 * cap : HEAD + 2 * cap + n]
        row = txn[1:]
        while (
            i < n
            and times[i] == t
            and (float(amounts[i]), names[int(codes[i])], card.ids[i]) <= row
        ):
            i += 1
    return i


def _load(blob: bytes | None, merchants: _Merchants, room: int = 4) -> _Card:
    """The card ``blob`` holds (None: a new card), with room for ``room`` more events.

    Reads the packed layout (:func:`_dump`) and the two pickled list layouts before it.
    """
    room = max(room, 4)
    if blob is None:
        return _Card(kernel.empty_card(room), [], None)
    if blob[0] == PACKED:
        data, distinct, ids, expiry = _DECODER.decode(blob)
        table = np.array([merchants.code(m) for m in distinct], np.int64)
        keys = np.fromiter(map(hash, ids), np.int64, len(ids))
        if len(data) % 8 == 0:
            buf = kernel.unpacked(np.frombuffer(data, np.int64), table, keys, room)
            if len(buf):
                return _Card(buf, ids, expiry)
        msg = f"a stored card's packed events do not fit its {len(ids)} ids and merchants"
        raise StateError(f"{msg}. {REBUILD_HINT}")
    state = pickle.loads(blob)
    if len(state) == 3:  # the row layout, (events, sessions, expiry): read it as columns
        events, sessions, expiry = state
        times = [e[0] for e in events]
        amounts = [e[1] for e in events]
        names = [e[2] for e in events]
        ids = [e[3] for e in events]
    else:  # the list layout: (times, amounts, merchants, ids, sessions, expiry)
        times, amounts, names, ids, sessions, expiry = state
    n, ns = len(times), len(sessions)
    cap = n + room
    buf = kernel.empty_card(cap, ns + 2)
    buf[N], buf[NS] = n, ns
    buf[HEAD : HEAD + n] = times
    buf[HEAD + cap : HEAD + cap + n].view(np.float64)[:] = amounts
    buf[HEAD + 2 * cap : HEAD + 2 * cap + n] = [merchants.code(m) for m in names]
    buf[HEAD + 3 * cap : HEAD + 3 * cap + n] = list(map(hash, ids))
    if ns:
        s = HEAD + COLUMNS * cap
        buf[s : s + 3 * ns] = np.array(sessions, np.int64).ravel()
    return _Card(buf, ids, expiry)


def _dump(card: _Card, names: list[str]) -> bytes:
    """The card's blob: ``(data, merchants, ids, expiry)`` as a msgpack array.

    ``data`` is :func:`operators.card_kernel.packed`'s array less its codes, as
    native ``int64`` bytes (times, amounts' ``float64`` bits, each event's index
    into ``merchants``, sessions ``(start, end, count)``); ``merchants`` are the
    card's distinct merchant ids in order of first appearance, ``ids`` its event
    ids. The blob depends on the card's events alone, not on the engine's codes.
    """
    data = kernel.packed(card.buf)
    end = 3 * len(card.ids) + 3 * int(card.buf[NS])
    return _ENCODER.encode(
        (data[:end].tobytes(), [names[c] for c in data[end:].tolist()], card.ids, card.expiry)
    )
