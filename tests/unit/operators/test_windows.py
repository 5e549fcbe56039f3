"""Routing source batches to shards: stable shard keys, nothing lost or reordered."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.decode import DeadLetters, DecodeConfig, Kind, PartitionDecoder
from operators.messages import CbEnvelope, PartitionBatch, RawRecord, ShardInput, TxnEnvelope
from operators.placement import shard_keys
from operators.windows import card_shard, merchant_shard, route_partition_batch

EXAMPLE_MS = 1_795_428_000_123
ROOT = Path(__file__).resolve().parents[3]


def _batch(kind: Kind, payloads: Sequence[dict[str, Any] | bytes], topic: str) -> PartitionBatch:
    decoder = PartitionDecoder(
        DecodeConfig(dead_letter_topic="dead-letters", max_message_bytes=64 * 1024),
        source=f"{topic}#0",
        kind=kind,
        resume=None,
        dead_letters=DeadLetters("dead-letters"),
        wall_clock=None,
    )
    records = [
        RawRecord(
            topic,
            0,
            offset,
            None,
            p if isinstance(p, bytes) else json.dumps(p).encode(),
            EXAMPLE_MS,
        )
        for offset, p in enumerate(payloads)
    ]
    return decoder.decode(records)


def _txn_payload(i: int, card_id: str) -> dict[str, Any]:
    return {
        "event_id": f"tx-{i}",
        "card_id": card_id,
        "merchant_id": "m-7",
        "amount": 1.0,
        "currency": "EUR",
        "event_time": EXAMPLE_MS + i,
    }


def _txn_batch(card_ids: Sequence[str]) -> PartitionBatch:
    payloads = [_txn_payload(i, card_id) for i, card_id in enumerate(card_ids)]
    return _batch("transaction", payloads, "transactions")


def _shard_inputs(routed: list[tuple[str, Any]]) -> dict[str, ShardInput]:
    inputs = dict(routed)
    assert len(inputs) == len(routed), "a shard twice"
    assert all(isinstance(value, ShardInput) for value in inputs.values())
    return inputs


def test_card_shard_is_crc32_based() -> None:
    # crc32(b"c-42") == 1270870069; Python's salted hash() would differ per process.
    assert card_shard("c-42", 16) == "c5"
    assert merchant_shard("m-7", 16) == "m1"
    assert card_shard("", 16) == "c0"


def test_card_shard_is_the_same_in_another_process() -> None:
    code = "from operators.windows import card_shard; print(card_shard('c-42', 1000))"
    other = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONHASHSEED": "12345", "PYTHONPATH": "."},
    )
    assert other.stdout.strip() == card_shard("c-42", 1000)


@given(st.text(min_size=1, max_size=128), st.integers(min_value=1, max_value=4096))
def test_shards_are_stable_and_in_range(card_id: str, shards: int) -> None:
    for shard in (card_shard, merchant_shard):
        key = shard(card_id, shards)
        assert key == shard(card_id, shards)
        assert 0 <= int(key[1:]) < shards


def test_one_shard_takes_everything() -> None:
    assert {card_shard(f"c-{i}", 1) for i in range(100)} == {"c0"}


def test_cards_spread_over_shards() -> None:
    assert {card_shard(f"c-{i}", 16) for i in range(1_000)} == {f"c{i}" for i in range(16)}


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.sampled_from([f"c-{i}" for i in range(40)]), max_size=60),
    st.integers(min_value=1, max_value=20),
    st.integers(min_value=1, max_value=3),
)
def test_routing_keeps_every_transaction_once_in_order(
    card_ids: list[str], shards: int, workers: int
) -> None:
    batch = _txn_batch(card_ids)
    assert len(batch.txns) == len(card_ids)
    inputs = _shard_inputs(route_partition_batch(batch, shards, workers))
    routed: list[TxnEnvelope] = []
    for key, shard_input in inputs.items():
        assert all(card_shard(env.txn.card_id, shards, workers) == key for env in shard_input.txns)
        # The worker count only names a shard: the same cards share it as with one worker.
        assert {card_shard(env.txn.card_id, shards) for env in shard_input.txns} <= {
            key.split(".")[0]
        }
        offsets = [env.raw.offset for env in shard_input.txns]
        assert offsets == sorted(offsets)
        assert shard_input.origin == batch.source
        assert shard_input.watermark == batch.watermark
        routed.extend(shard_input.txns)
    assert sorted(env.raw.offset for env in routed) == list(range(len(card_ids)))
    # The first batch of a partition tells every card shard its watermark.
    assert batch.broadcast
    assert set(inputs) == set(shard_keys("c", shards, workers))


def test_without_broadcast_only_shards_with_records_get_a_batch() -> None:
    decoder = PartitionDecoder(
        DecodeConfig(dead_letter_topic="dead-letters", max_message_bytes=64 * 1024),
        source="transactions#0",
        kind="transaction",
        resume=None,
        dead_letters=DeadLetters("dead-letters"),
        wall_clock=None,
    )
    payload = {
        "event_id": "tx-1",
        "card_id": "c-42",
        "merchant_id": "m-7",
        "amount": 1.0,
        "currency": "EUR",
        "event_time": EXAMPLE_MS,
    }
    # Two records: the partition's watermark is set once two records agree.
    first = [
        RawRecord("transactions", 0, i, None, json.dumps(payload).encode(), EXAMPLE_MS)
        for i in range(2)
    ]
    assert decoder.decode(first).broadcast
    payload["event_id"] = "tx-2"
    second = [RawRecord("transactions", 0, 2, None, json.dumps(payload).encode(), EXAMPLE_MS)]
    batch = decoder.decode(second)
    assert not batch.broadcast
    inputs = _shard_inputs(route_partition_batch(batch, 16))
    assert list(inputs) == [card_shard("c-42", 16)]
    assert [env.txn.event_id for env in inputs["c5"].txns] == ["tx-2"]


@pytest.mark.parametrize(
    ("kind", "topic"), [("transaction", "transactions"), ("chargeback", "chargebacks")]
)
def test_dead_letters_are_not_routed_to_any_shard(kind: Kind, topic: str) -> None:
    """Bad records leave at the source: a batch of only those reaches no shard."""
    batch = _batch(kind, [b"not json", b"[]"], topic)
    assert len(batch.dead) == 2
    # A first batch tells every shard of its stage the watermark, with no records.
    inputs = _shard_inputs(route_partition_batch(batch, 4))
    assert all(not si.txns and si.featured is None and not si.chargebacks for si in inputs.values())
    good = _batch("transaction", [_txn_payload(1, "c-42"), b"not json"], "transactions")
    inputs = _shard_inputs(route_partition_batch(good, 16))
    assert [env.txn.event_id for si in inputs.values() for env in si.txns] == ["tx-1"]


def test_chargebacks_go_to_their_merchant_shard() -> None:
    payloads = [
        {
            "event_id": f"cb-{i}",
            "txn_event_id": f"tx-{i}",
            "merchant_id": f"m-{i % 3}",
            "event_time": EXAMPLE_MS + i,
        }
        for i in range(12)
    ]
    batch = _batch("chargeback", payloads, "chargebacks")
    assert len(batch.chargebacks) == 12
    inputs = _shard_inputs(route_partition_batch(batch, 8))
    seen: list[CbEnvelope] = []
    for key, shard_input in inputs.items():
        assert key.startswith("m")
        assert shard_input.txns == []
        assert shard_input.featured is None
        for item in shard_input.chargebacks:
            assert merchant_shard(item.cb.merchant_id, 8) == key
            seen.append(item)
        offsets = [
            item.raw.offset for item in seen if merchant_shard(item.cb.merchant_id, 8) == key
        ]
        assert offsets == sorted(offsets)
    assert sorted(item.raw.offset for item in seen) == list(range(12))


@pytest.mark.parametrize("shards", [1, 3, 16])
def test_empty_first_batch_still_reaches_every_shard(shards: int) -> None:
    batch = _txn_batch([])
    inputs = _shard_inputs(route_partition_batch(batch, shards))
    assert set(inputs) == {f"c{i}" for i in range(shards)}
    assert all(shard_input.txns == [] for shard_input in inputs.values())
