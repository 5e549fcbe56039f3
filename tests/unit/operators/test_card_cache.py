"""The card engine's write-back cache: same features and, once flushed, the same state."""

from __future__ import annotations

import json
import math
import pickle
from array import array

import msgspec
import numpy as np
import pytest

from flows.testing import CARD_SHARD, ReplayRecord, run_log, shard_state
from models.simulator import SimConfig, simulate
from operators import card_kernel as kernel
from operators.card_features import CardConfig, CardFeatureEngine, _dump, _load, _Merchants
from operators.columns import BLOCK_COLUMNS
from operators.messages import OutMessage, RawRecord, TxnColumns
from operators.watermarks import MinWatermark, TimeConfig
from schemas.errors import StateError
from schemas.records import Transaction
from state import keys
from state.memory import MemoryStore
from tests.unit.operators.blocks import TxnRecord, columns_of
from tests.unit.state.recording import RecordingStore

T0 = 1_795_392_000_000
HOUR = 3_600_000


def _state(store: MemoryStore) -> dict[bytes, object]:
    """Every key the card engine wrote, card blobs decoded."""
    out: dict[bytes, object] = {}
    for key, value in shard_state(store, CARD_SHARD).scan(b"", b"\xff" * 8):
        if key.startswith(keys.CARD):
            out[key] = msgspec.msgpack.decode(value)
        elif key.startswith(keys.CARD_EXPIRY):
            out[key] = value
    return out


def _simulated(n: int) -> list[ReplayRecord]:
    records = []
    # One event every 50 s: 3,000 span 41 h, so cards expire along the way.
    config = SimConfig(seed=3, cards=300, events_per_second=0.02, start_ms=T0)
    for i, ev in enumerate(simulate(config, n)):
        kind = ev.kind
        body = json.dumps(ev.payload).encode()
        records.append(ReplayRecord(kind, 0, i, ev.key.encode(), body, ev.event_time_ms))
    return records


@pytest.mark.parametrize("card_cache", [1, 7, 1000])
def test_cached_engine_scores_and_stores_as_write_through(card_cache: int) -> None:
    records = _simulated(3000)
    plain, cached = MemoryStore(), MemoryStore()
    # No final flush: the cards still held at the end stay in the store to compare.
    want = run_log(records, store=plain, batch_size=64, flush=False, card_cache=0)
    got = run_log(records, store=cached, batch_size=64, flush=False, card_cache=card_cache)
    assert got.rows == want.rows
    assert got.dead_letters == want.dead_letters
    assert _state(cached) == _state(plain)
    stored = [k for k in _state(plain) if k.startswith(keys.CARD)]
    assert len(stored) < len({r.card_id for r in want.rows})  # some expired on the way


def _txn(i: int, card: str, t: int) -> ReplayRecord:
    body = {
        "event_id": f"e{i}",
        "card_id": card,
        "merchant_id": "m1",
        "amount": 10.0,
        "currency": "EUR",
        "event_time": t,
    }
    return ReplayRecord("transaction", 0, i, card.encode(), json.dumps(body).encode(), t)


def test_cached_card_changed_after_its_expiry_entry_was_written_is_kept() -> None:
    # "busy" is written (evicted by the others), then used again every 30 minutes for
    # two days while cached: its first expiry entry falls due, but its newest event
    # keeps it alive. "idle" is never used again and is expired.
    records = [_txn(0, "busy", T0), _txn(1, "idle", T0 + 1000), _txn(2, "other", T0 + 2000)]
    records += [_txn(10 + i, "busy", T0 + (i + 1) * HOUR // 2) for i in range(100)]
    store = MemoryStore()
    result = run_log(records, store=store, batch_size=1, flush=False, card_cache=2)
    busy = [r for r in result.rows if r.card_id == "busy"]
    assert busy[-1].features["card_count_24h"] == 48.0  # 47 earlier within 24 h, plus itself
    cards = {k for k in _state(store) if k.startswith(keys.CARD)}
    assert cards == {keys.card_key("busy")}


def _batch(cards: list[str], t: int) -> TxnColumns:
    return columns_of(
        TxnRecord(
            Transaction(
                event_id=f"{card}-{t}",
                card_id=card,
                merchant_id="m1",
                amount=10.0,
                currency="EUR",
                event_time=t,
            ),
            RawRecord("transactions", 0, 0, card.encode(), None, t),
        )
        for card in cards
    )


def test_a_card_in_use_outlives_the_evictions_of_cards_cached_with_it() -> None:
    # Ten cards fill the cache; "c0" is used again, then two new cards overflow it:
    # eviction drops the longest cached, but passes over "c0", used since.
    store = RecordingStore()
    engine = CardFeatureEngine(CardConfig(time=TimeConfig(), cache_cards=10), store, _dead)
    cards = [f"c{i}" for i in range(10)]
    engine.process(_batch(cards, T0), MinWatermark())
    engine.process(_batch(["c0"], T0 + 1000), MinWatermark())
    engine.process(_batch(["x", "y"], T0 + 2000), MinWatermark())  # 12 > 10: down to 9
    store.read.clear()
    block, _ = engine.process(_batch(cards, T0 + 3000), MinWatermark())
    assert store.read == [keys.card_key(c) for c in ("c1", "c2", "c3")]
    # Evicted cards were written back, and read as they were left.
    counts = block.features[:, BLOCK_COLUMNS.index("card_count_1m")].tolist()
    assert counts == [3.0] + [2.0] * 9


def _dead(raw: RawRecord, reason: str) -> OutMessage:
    raise AssertionError(f"no dead letters here: {reason}")


def _decoded(blob: bytes) -> tuple[object, ...]:
    """A packed card blob as the list layout: (times, amounts, merchants, ids, sessions, expiry)."""
    data, distinct, ids, expiry = msgspec.msgpack.decode(blob)
    n = len(ids)
    ints = array("q", data).tolist()
    sessions = [ints[j : j + 3] for j in range(3 * n, len(ints), 3)]
    merchants = [distinct[i] for i in ints[2 * n : 3 * n]]
    amounts = array("d", data[8 * n : 16 * n]).tolist()
    return ints[:n], amounts, merchants, ids, sessions, expiry


EVENTS = [(T0, 5.0, "m2", "e1"), (T0 + 1000, 7.5, "m1", "e2"), (T0 + 1000, 0.5, "m2", "e3")]
SESSIONS = [[T0 - 5 * HOUR, T0 - 4 * HOUR, 3], [T0, T0 + 1000, 3]]
LISTS = (
    [T0, T0 + 1000, T0 + 1000],
    [5.0, 7.5, 0.5],
    ["m2", "m1", "m2"],
    ["e1", "e2", "e3"],
    SESSIONS,
    T0 + 25 * HOUR,
)


@pytest.mark.parametrize(
    "state",
    [(EVENTS, SESSIONS, T0 + 25 * HOUR), LISTS],
    ids=["row layout", "list layout"],
)
def test_cards_written_in_an_older_layout_still_load(state: tuple[object, ...]) -> None:
    merchants = _Merchants()
    card = _load(pickle.dumps(state), merchants)
    assert card.ids == ["e1", "e2", "e3"]
    assert card.expiry == T0 + 25 * HOUR
    # Written back, it is in the packed layout, merchants by distinct name.
    blob = _dump(card, merchants.names)
    assert msgspec.msgpack.decode(blob)[1] == ["m2", "m1"]
    assert _decoded(blob) == LISTS


def test_a_packed_card_loads_as_it_was_written_whatever_the_merchant_codes() -> None:
    merchants = _Merchants()
    blob = _dump(_load(pickle.dumps(LISTS), merchants), merchants.names)
    # Another engine has numbered other merchants first: the card's codes differ.
    other = _Merchants()
    for name in ("m0", "m1", "m9"):
        other.code(name)
    card = _load(blob, other, room=10)
    assert card.buf[kernel.CAP] == 13  # three events and room for ten
    assert _dump(card, other.names) == blob
    assert _decoded(blob) == LISTS


def _tampered(data: bytes, distinct: list[str], ids: list[str]) -> bytes:
    return msgspec.msgpack.encode([data, distinct, ids, None])


def test_a_packed_card_that_does_not_fit_its_ids_or_merchants_is_damaged_state() -> None:
    merchants = _Merchants()
    blob = _dump(_load(pickle.dumps(LISTS), merchants), merchants.names)
    data, distinct, ids, _expiry = msgspec.msgpack.decode(blob)
    words = np.frombuffer(data, np.int64).copy()
    beyond = words.copy()
    beyond[2 * len(ids)] = len(distinct)  # a merchant index past the card's merchants
    for bad in (
        _tampered(beyond.tobytes(), distinct, ids),
        _tampered(data, distinct, [*ids, "e4"]),  # an id more than its events
        _tampered(data[:-1], distinct, ids),  # not whole 8-byte words
        _tampered(words[:-1].tobytes(), distinct, ids),  # a session cut short
    ):
        with pytest.raises(StateError, match="do not fit"):
            _load(bad, _Merchants())


def test_an_empty_card_packs_to_no_data() -> None:
    merchants = _Merchants()
    card = _load(pickle.dumps(([], [], [], [], [], None)), merchants)
    blob = _dump(card, merchants.names)
    assert msgspec.msgpack.decode(blob) == [b"", [], [], None]
    assert _dump(_load(blob, merchants), merchants.names) == blob


def test_first_amount_of_a_card_is_summed_like_any_window() -> None:
    # An empty window sum plus the amount: a -0.0 amount gives 0.0, as fsum(()) + -0.0 does.
    body = json.loads(_txn(0, "c", T0).value)
    body["amount"] = -0.0
    record = ReplayRecord("transaction", 0, 0, b"c", json.dumps(body).encode(), T0)
    (row,) = run_log([record]).rows
    assert math.copysign(1.0, row.features["card_amount_24h"]) == 1.0
