"""``flows.testing``: the real flow over an in-memory log, in its order, whatever the batch size."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from flows.testing import (
    CARD_SHARD,
    END_OF_TIME_MS,
    LogResult,
    ReplayRecord,
    run_log,
    shard_state,
)
from operators.features import ALL_FEATURES
from operators.watermarks import TimeConfig
from schemas.timefmt import format_ms
from state import keys
from state.memory import MemoryStore

T0 = 1_795_392_000_000  # aligned to 5 minutes
TIME = TimeConfig(watermark_agreement=1)


def _log(seed: int, n: int = 120) -> list[ReplayRecord]:
    """Two transaction partitions and a chargeback partition, interleaved; Kafka timestamps
    jitter back and forth; duplicates, invalid records and late events mixed in."""
    rng = random.Random(seed)
    offsets = {("transaction", 0): 0, ("transaction", 1): 0, ("chargeback", 0): 0}
    out = []
    sent: list[dict[str, Any]] = []
    t = T0
    for i in range(n):
        t += rng.choice([0, 1_000, 20_000, 90_000])
        if rng.random() < 0.15:
            kind, partition = "chargeback", 0
            body: Any = {
                "event_id": f"cb-{i}",
                "txn_event_id": f"tx-{rng.randrange(max(1, i))}",
                "merchant_id": f"m{rng.randrange(3)}",
                "card_id": f"c{rng.randrange(5)}",
                "event_time": t - rng.choice([0, 400_000]),
            }
        else:
            kind, partition = "transaction", rng.randrange(2)
            body = {
                "event_id": f"tx-{i}",
                "card_id": f"c{rng.randrange(5)}",
                "merchant_id": f"m{rng.randrange(3)}",
                "amount": float(rng.randrange(1, 500)),
                "currency": "EUR",
                "event_time": t - rng.choice([0, 0, 0, 3_000, 200_000]),
            }
            if sent and rng.random() < 0.1:
                body = rng.choice(sent[-5:])  # a copy: a duplicate on its card
            sent.append(body)
        value = b"{oops" if rng.random() < 0.05 else json.dumps(body).encode()
        ts = t + rng.choice([0, 0, -2_000, 1_500])
        offset = offsets[kind, partition]
        offsets[kind, partition] = offset + 1
        out.append(ReplayRecord(kind, partition, offset, b"k", value, ts))  # type: ignore[arg-type]
    return out


def _stable(result: LogResult) -> tuple[object, ...]:
    return (result.rows, result.dead_letters, result.window_aggregates, result.quality)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_results_do_not_depend_on_the_batch_size(seed: int) -> None:
    log = _log(seed)
    results = [run_log(log, time=TIME, batch_size=n) for n in (1, 4, 1000)]
    first = results[0]
    assert first.rows and first.dead_letters and first.window_aggregates
    assert {d["reason"] for d in first.dead_letters} >= {"json", "duplicate"}
    assert any(r.late for r in first.rows)
    for other in results[1:]:
        assert _stable(other) == _stable(first)


def test_every_record_is_scored_or_dead_lettered_once_dead_letters_in_log_order() -> None:
    log = _log(4)
    result = run_log(log, time=TIME)
    txns = [r for r in log if r.kind == "transaction"]
    dead_txns = [d for d in result.dead_letters if d["topic"] == "transactions"]
    assert len(result.rows) + len(dead_txns) == len(txns)
    position = {("transactions" if r.kind == "transaction" else "chargebacks", r.partition,
                 r.offset): i for i, r in enumerate(log)}  # fmt: skip
    places = [position[d["topic"], d["partition"], d["offset"]] for d in result.dead_letters]
    assert places == sorted(places)
    assert all(d["received_at"] == format_ms(END_OF_TIME_MS) for d in result.dead_letters)


def test_rows_are_the_scores_features() -> None:
    result = run_log(_log(5), time=TIME)
    assert len(result.rows) == len(result.scores)
    for row, score in zip(result.rows, result.scores, strict=True):
        assert set(row.features) == set(ALL_FEATURES)
        assert (row.event_id, row.features, row.late) == (
            score["event_id"],
            score["features"],
            score["late"],
        )


def test_flush_closes_every_window_and_without_it_state_stays() -> None:
    log = _log(6)
    flushed, store = run_log(log, time=TIME), MemoryStore()
    open_end = run_log(log, time=TIME, flush=False, store=store)
    assert len(flushed.window_aggregates) > len(open_end.window_aggregates)
    assert flushed.window_aggregates[: len(open_end.window_aggregates)] == (
        open_end.window_aggregates
    )
    cards = list(shard_state(store, CARD_SHARD).scan(keys.CARD, keys.CARD + b"\xff"))
    assert len(cards) == 5


def test_polling_by_partition_scores_every_transaction() -> None:
    log = _log(7)
    by_log = run_log(log, time=TIME)
    by_partition = run_log(log, time=TIME, polls="partitions", batch_size=7)
    assert sorted(r.event_id for r in by_partition.rows) == sorted(r.event_id for r in by_log.rows)


def test_a_batch_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        run_log(_log(8), batch_size=0)
