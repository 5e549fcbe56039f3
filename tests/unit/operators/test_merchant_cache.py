"""The merchant engine's write-back window cache: same outputs and, once flushed, the same state."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flows.testing import MERCHANT_SHARD, ReplayRecord, run_log, shard_state
from models.simulator import SimConfig, simulate
from operators.columns import BLOCK_COLUMNS
from operators.merchant_windows import WINDOW_MS, MerchantConfig, MerchantWindowEngine
from operators.messages import CbEnvelope, FeatureBlock, OutMessage, RawRecord
from operators.watermarks import MinWatermark, TimeConfig
from schemas.records import Transaction
from state import keys
from state.memory import MemoryStore
from tests.unit.operators.blocks import TxnRecord, columns_of

T0 = 1_795_392_000_000
MERCHANT_KEYS = (keys.WINDOW, keys.CLOSE_TIMER, keys.PURGE_TIMER)


def _merchant_state(store: MemoryStore) -> dict[bytes, bytes]:
    """Every key the merchant engine wrote: windows and their close and purge timers."""
    return {k: v for k, v in store.scan(b"", b"\xff" * 8) if k.startswith(MERCHANT_KEYS)}


def _simulated(n: int) -> list[ReplayRecord]:
    # An event every 100 s on 40 merchants: 3,000 events span 37 hours, so windows
    # close and are purged (24 h after closing) along the way, and chargebacks follow
    # their transactions often enough that the chargeback partition never stalls.
    config = SimConfig(
        seed=5, cards=500, merchants=40, events_per_second=0.01, fraud_share=0.3, start_ms=T0
    )
    records = []
    for i, ev in enumerate(simulate(config, n)):
        body = json.dumps(ev.payload).encode()
        records.append(ReplayRecord(ev.kind, 0, i, ev.key.encode(), body, ev.event_time_ms))
    return records


@pytest.mark.parametrize("merchant_cache", [1, 5, 1000])
def test_cached_windows_score_and_store_as_write_through(merchant_cache: int) -> None:
    records = _simulated(3000)
    assert any(r.kind == "chargeback" for r in records)
    plain, cached = MemoryStore(), MemoryStore()
    # No final flush: the windows still open at the end stay in the store to compare.
    want = run_log(records, store=plain, batch_size=16, flush=False, merchant_cache=0)
    got = run_log(records, store=cached, batch_size=16, flush=False, merchant_cache=merchant_cache)
    assert got.rows == want.rows
    assert got.window_aggregates == want.window_aggregates
    assert got.dead_letters == want.dead_letters
    assert len(want.window_aggregates) > 40  # windows closed on the way
    plain_state = _merchant_state(shard_state(plain, MERCHANT_SHARD))
    assert _merchant_state(shard_state(cached, MERCHANT_SHARD)) == plain_state
    # Purged windows left the cache's store as well: only the last day's remain.
    windows = [k for k in plain_state if k.startswith(keys.WINDOW)]
    first = min(r.event_time for r in want.rows)
    assert windows and min(int.from_bytes(k[-8:], "big") for k in windows) > first + WINDOW_MS


def _featured(i: int, merchant: str, t: int, amount: float) -> FeatureBlock:
    """A block of one transaction, its card columns already filled."""
    txn = Transaction(
        event_id=f"e{i}",
        card_id="c1",
        merchant_id=merchant,
        amount=amount,
        currency="EUR",
        event_time=t,
    )
    raw = RawRecord("transactions", 0, i, None, b"{}", t)
    features = np.zeros((1, len(BLOCK_COLUMNS)))
    return FeatureBlock(columns_of([TxnRecord(txn, raw, False, t)]), features, np.array([t]), [])


def _count(engine: MerchantWindowEngine, block: FeatureBlock, wm: MinWatermark) -> float:
    """``block``'s one row through ``engine``: its previous window's transaction count."""
    assert engine.process(block, [("c0", 0)], wm) == []
    value: float = block.features[0, BLOCK_COLUMNS.index("merchant_txn_count_prev_5m")]
    return value


def _dead(env: CbEnvelope, error: str) -> OutMessage:
    raise AssertionError(f"no chargebacks here: {env} {error}")


def test_windows_reach_the_store_at_flush_not_per_batch() -> None:
    """What makes it cheap: a busy merchant's window is written once, not once a batch."""
    store = MemoryStore()
    config = MerchantConfig(time=TimeConfig(), aggregates_topic="agg", cache_windows=100)
    engine = MerchantWindowEngine(config, store, _dead)
    wm = MinWatermark()
    for i in range(10):
        assert _count(engine, _featured(i, "m1", T0 + i, 2.0), wm) == 0.0
    start = T0 - T0 % WINDOW_MS
    window = keys.window_key("m1", start)
    # The close timer is written when the window is created; its counts wait for flush.
    assert store.get_many([window]) == [None]
    close = keys.timer_key(keys.shard_namespace(keys.CLOSE_TIMER, ""), start + WINDOW_MS, "m1")
    assert list(_merchant_state(store)) == [close]
    engine.flush()
    assert _merchant_state(store)[window] == _merchant_state(_write_through(10))[window]
    # The next window sees this one as its previous, from the cache.
    assert _count(engine, _featured(99, "m1", start + WINDOW_MS, 1.0), wm) == 10.0


def _write_through(n: int) -> MemoryStore:
    store = MemoryStore()
    config = MerchantConfig(time=TimeConfig(), aggregates_topic="agg")
    engine = MerchantWindowEngine(config, store, _dead)
    wm = MinWatermark()
    for i in range(n):
        _count(engine, _featured(i, "m1", T0 + i, 2.0), wm)
    return store
