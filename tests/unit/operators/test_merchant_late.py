"""Late transactions read their previous merchant window as the contract defines it."""

from __future__ import annotations

import json

from flows.testing import MERCHANT_SHARD, ReplayRecord, run_log, shard_state
from operators.merchant_windows import RETAIN_MS, WINDOW_MS
from state import keys
from state.memory import MemoryStore

T0 = 1_795_392_000_000  # aligned to 5 minutes
MINUTE = 60_000


def _txn(offset: int, card: str, merchant: str, t: int) -> ReplayRecord:
    body = {
        "event_id": f"e{offset}",
        "card_id": card,
        "merchant_id": merchant,
        "amount": 10.0,
        "currency": "EUR",
        "event_time": t,
    }
    return ReplayRecord("transaction", 0, offset, card.encode(), json.dumps(body).encode(), t)


def _log(late_at: int, ticks_until: int) -> list[ReplayRecord]:
    """Two transactions at ``m`` in [T0, T0 + 5 min), a ticker up to ``ticks_until``, a late one."""
    records = [_txn(0, "a", "m", T0 + 10_000), _txn(1, "b", "m", T0 + 20_000)]
    t = T0 + 30_000
    while t <= ticks_until:
        records.append(_txn(len(records), "ticker", "m-tick", t))
        t += 10 * MINUTE
    records.append(_txn(len(records), "late", "m", late_at))
    return records


def test_a_late_transaction_counts_its_previous_windows_seen_transactions() -> None:
    # Event time is 30 min on: the old purge horizon (end + lateness + 5 min) has passed.
    late_at = T0 + WINDOW_MS + 30_000
    result = run_log(_log(late_at, T0 + 30 * MINUTE), flush=False)
    row = result.rows[-1]
    assert row.card_id == "late"
    assert row.late
    assert row.features["merchant_txn_count_prev_5m"] == 2.0


def test_late_reads_reach_as_far_back_as_card_history() -> None:
    # 23 h on, the late transaction is still within the card history kept (24 h + lateness).
    late_at = T0 + WINDOW_MS + 30_000
    result = run_log(_log(late_at, T0 + 23 * 60 * MINUTE), flush=False)
    assert result.rows[-1].late
    assert result.rows[-1].features["merchant_txn_count_prev_5m"] == 2.0


def test_windows_are_deleted_once_no_late_transaction_can_read_them() -> None:
    store = MemoryStore()
    end = T0 + WINDOW_MS
    run_log(_log(T0 + 40_000, end + RETAIN_MS + 2 * 60 * MINUTE), store=store, flush=False)
    view = shard_state(store, MERCHANT_SHARD)
    stored = [k for k, _ in view.scan(keys.WINDOW, keys.WINDOW + b"\xff")]
    assert stored and all(b"m-tick" in k for k in stored)
