"""State stays bounded on an endless stream: old cards and windows leave RocksDB."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.testing import CARD_SHARD, MERCHANT_SHARD, ReplayRecord, run_log, shard_state
from state import keys
from state.rocksdb import RocksStore

T0 = 1_795_392_000_000
HOUR = 3_600_000


def _txn(i: int, card: str, t: int) -> ReplayRecord:
    body = {
        "event_id": f"e{i}",
        "card_id": card,
        "merchant_id": f"m{i % 7}",
        "amount": 10.0,
        "currency": "EUR",
        "event_time": t,
    }
    return ReplayRecord("transaction", 0, i, card.encode(), json.dumps(body).encode(), t)


def _count(store: RocksStore, shard: str, prefix: bytes) -> int:
    return sum(1 for _ in shard_state(store, shard).scan(prefix, prefix + b"\xff" * 8))


@pytest.mark.parametrize("card_cache", [0, 2], ids=["write-through", "cached"])
def test_old_cards_and_windows_are_deleted_when_event_time_moves_on(
    tmp_path: Path, card_cache: int
) -> None:
    store = RocksStore(tmp_path / "db")
    day_one = [_txn(i, f"old-{i}", T0 + i * 1000) for i in range(500)]
    run_log(day_one, store=store, batch_size=100, flush=False, card_cache=card_cache)
    assert _count(store, CARD_SHARD, keys.CARD) == 500
    assert _count(store, MERCHANT_SHARD, keys.WINDOW) > 0

    # Event time moves on steadily (within the far-future bound) for two days,
    # then other cards: the old ones are past 24 h + lateness.
    store.close()
    store = RocksStore(tmp_path / "db-2")
    later = T0 + 50 * HOUR
    ticks = [_txn(600 + i, "new-ticker", T0 + 600_000 + i * 1_800_000) for i in range(100)]
    day_three = [_txn(1000 + i, f"new-{i}", later + i * 1000) for i in range(300)]
    run_log(
        day_one + ticks + day_three,
        store=store,
        batch_size=100,
        flush=False,
        card_cache=card_cache,
    )

    card_state = shard_state(store, CARD_SHARD)
    cards = [k for k, _ in card_state.scan(keys.CARD, keys.CARD + b"\xff")]
    assert cards and all(k.startswith(keys.CARD + b"new-") for k in cards)
    namespace = keys.shard_namespace(keys.CARD_EXPIRY, CARD_SHARD)
    expiry = [
        keys.parse_timer_key(k, len(namespace))[1]
        for k, _ in card_state.scan(namespace, keys.CARD_EXPIRY + b"\xff")
    ]
    assert expiry and all(c.startswith("new-") for c in expiry)
    # Windows of day one were closed and purged; those of the last 24 h (plus a
    # window and the lateness) stay readable for late transactions.
    merchant_state = shard_state(store, MERCHANT_SHARD)
    starts = [int.from_bytes(k[-8:], "big") for k, _ in merchant_state.scan(keys.WINDOW, b"X")]
    assert starts and min(starts) >= later - 25 * HOUR
    store.close()


@pytest.mark.parametrize("kept", [True, None], ids=["kept", "as-the-service"])
def test_cached_state_is_written_back_at_the_end_only_when_the_store_outlives_the_run(
    tmp_path: Path, kept: bool | None
) -> None:
    # Without recovery the service's store is discarded at its next start: writing every
    # cached card and window back at the end of the input would be work nobody reads.
    store = RocksStore(tmp_path / "db")
    records = [_txn(i, f"c{i % 40}", T0 + i * 1000) for i in range(200)]
    run_log(records, store=store, flush=False, state_kept=kept)
    cards = _count(store, CARD_SHARD, keys.CARD)
    windows = _count(store, MERCHANT_SHARD, keys.WINDOW)
    if kept:
        assert (cards, windows) == (40, 7)
    else:
        assert (cards, windows) == (0, 0)
