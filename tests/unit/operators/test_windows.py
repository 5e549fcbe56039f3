"""Routing source batches to shards: stable shard keys, nothing lost or reordered."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.columns import BLOCK_COLUMNS
from operators.decode import DeadLetters, DecodeConfig, Kind, PartitionDecoder
from operators.messages import (
    CbEnvelope,
    FeatureBlock,
    PartitionBatch,
    RawRecord,
    ShardInput,
    Tick,
    TxnColumns,
)
from operators.placement import shard_keys
from operators.windows import (
    _in_ingest_order,
    _split,
    _txns_in_ingest_order,
    card_shard,
    merchant_shard,
    route_partition_batch,
    shard_of,
)
from schemas.records import Chargeback, Transaction
from tests.unit.operators.blocks import TxnRecord, columns_of

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
    routed: list[int] = []
    for key, shard_input in inputs.items():
        txns = shard_input.txns
        assert all(card_shard(card_id, shards, workers) == key for card_id in txns.card_id)
        # The worker count only names a shard: the same cards share it as with one worker.
        assert {card_shard(card_id, shards) for card_id in txns.card_id} <= {key.split(".")[0]}
        offsets = [raw.offset for raw in txns.raw]
        assert offsets == sorted(offsets)
        # Every column moved with its row.
        assert txns.card_id == [card_ids[offset] for offset in offsets]
        assert txns.event_id == [batch.txns.event_id[offset] for offset in offsets]
        assert shard_input.origin == batch.source
        assert shard_input.watermark == batch.watermark
        routed.extend(offsets)
    assert sorted(routed) == list(range(len(card_ids)))
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
    assert inputs["c5"].txns.event_id == ["tx-2"]


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
    assert [event_id for si in inputs.values() for event_id in si.txns.event_id] == ["tx-1"]


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
        assert not shard_input.txns
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
    assert all(not shard_input.txns for shard_input in inputs.values())


def _interleaved(block: FeatureBlock) -> list[tuple[str, object]]:
    """A block's rows (event id, watermark, features) and ticks, in the order they came."""
    out: list[tuple[str, object]] = []
    ticks = list(block.ticks)
    for r, event_id in enumerate(block.txns.event_id):
        while ticks and ticks[0][0] <= r:
            out.append(("tick", ticks.pop(0)[1]))
        out.append(("row", (event_id, int(block.watermarks[r]), *block.features[r])))
    out.extend(("tick", wm) for _, wm in ticks)
    return out


def _random_block(rng: random.Random, origin: int, n: int) -> FeatureBlock:
    """A card shard's block: rows in ingest order over few timestamps, ticks anywhere."""
    recs = []
    for i in range(n):
        payload = _txn_payload(i, f"c-{origin}")
        payload["event_id"] = f"tx-{origin}-{i}"
        payload["merchant_id"] = f"m-{rng.randrange(6)}"
        raw = RawRecord(
            "transactions", rng.randrange(2), rng.randrange(50), None, b"{}", rng.randrange(4)
        )
        recs.append(TxnRecord(Transaction.model_validate(payload), raw, False, 0))
    recs.sort(key=lambda e: (e.raw.timestamp_ms, e.raw.source, e.raw.offset))
    features = np.array([[rng.random() for _ in BLOCK_COLUMNS] for _ in range(n)])
    features = features.reshape(n, len(BLOCK_COLUMNS))
    marks = np.array(sorted(rng.randrange(100) for _ in range(n)), dtype=np.int64)
    ticks = sorted((rng.randrange(n + 1), rng.randrange(100)) for _ in range(rng.randrange(4)))
    return FeatureBlock(columns_of(recs), features, marks, ticks)


def _chargebacks(rng: random.Random, partition: int) -> list[CbEnvelope]:
    out = []
    for i in range(rng.randrange(4)):
        cb = Chargeback(
            event_id=f"cb-{partition}-{i}",
            txn_event_id="tx",
            merchant_id="m-1",
            event_time=EXAMPLE_MS,
        )
        raw = RawRecord("chargebacks", partition, i, None, b"{}", rng.randrange(4))
        out.append(CbEnvelope(cb, raw, i))
    return out


@pytest.mark.parametrize("single", [False, True])
@pytest.mark.parametrize("seed", range(60))
def test_merchant_inputs_merge_as_records_sorted_stably_by_ingest_order(
    seed: int, single: bool
) -> None:
    """Rows, chargebacks and ticks of several inputs: the order of a stable sort of the records.

    The reference sorts one item per record or tick, each keyed by its ingest order
    (a tick by the record before it in its sender's order), stably. ``single``:
    one card shard's block and no chargebacks, which the stage merges without a sort.
    """
    rng = random.Random(seed)
    values = []
    for k in range(1 if single else rng.randrange(1, 4)):
        block = _random_block(rng, k, rng.randrange(0, 8))
        values.append(ShardInput(f"c{k}", 0, False, TxnColumns(), block, [], "m0"))
    for p in range(0 if single else rng.randrange(0, 3)):
        cbs = _chargebacks(rng, p)
        values.append(ShardInput(f"chargebacks#{p}", 0, False, TxnColumns(), None, cbs, ""))
    rng.shuffle(values)
    keyed: list[tuple[tuple[int, str, int], str, tuple[str, object]]] = []
    for si in values:
        last = (-(2**63), "", -1)
        for cb in si.chargebacks:
            keyed.append(
                ((cb.raw.timestamp_ms, cb.raw.source, cb.raw.offset), si.origin, ("cb", cb))
            )
        if si.featured is None:
            continue
        rows = iter(si.featured.txns.raw)
        for item in _interleaved(si.featured):
            if item[0] == "row":
                raw = next(rows)
                last = (raw.timestamp_ms, raw.source, raw.offset)
            keyed.append((last, si.origin, item))
    keyed.sort(key=lambda k: k[0])
    want = [(origin, item) for _, origin, item in keyed]

    block, steps = _in_ingest_order(values)
    got: list[tuple[str, tuple[str, object]]] = []
    next_row = 0
    for origin, step in steps:
        if isinstance(step, int):
            assert step == next_row  # rows come in block order
            next_row += 1
            row = (block.txns.event_id[step], int(block.watermarks[step]), *block.features[step])
            got.append((origin, ("row", row)))
        elif isinstance(step, Tick):
            got.append((origin, ("tick", step.watermark)))
        else:
            got.append((origin, ("cb", step)))
    assert next_row == len(block)
    assert got == want


@pytest.mark.parametrize("seed", range(40))
def test_card_inputs_merge_as_transactions_sorted_stably_by_ingest_order(seed: int) -> None:
    """Several partitions' transactions: the order of a stable sort by (timestamp, input, offset).

    Few timestamps and offsets, so ties across and within inputs are common;
    input names sort as strings (``transactions#10`` before ``transactions#2``).
    """
    rng = random.Random(seed)
    parts = []
    for p in rng.sample([0, 1, 2, 10], rng.randrange(0, 4)):
        recs = []
        for i in range(rng.randrange(0, 9)):
            payload = _txn_payload(i, f"c-{p}")
            payload["event_id"] = f"tx-{p}-{i}"
            raw = RawRecord(
                "transactions", p, rng.randrange(5), None, b"{}", EXAMPLE_MS + rng.randrange(3)
            )
            recs.append(TxnRecord(Transaction.model_validate(payload), raw, False, i))
        parts.append(columns_of(recs))
    every = [
        (event_id, raw)
        for part in parts
        for event_id, raw in zip(part.event_id, part.raw, strict=True)
    ]
    want = sorted(every, key=lambda e: (e[1].timestamp_ms, e[1].source, e[1].offset))
    got = _txns_in_ingest_order(parts)
    assert list(zip(got.event_id, got.raw, strict=True)) == want
    if want:
        assert got == TxnColumns.concat(parts).take(
            [every.index(item) for item in want]
        )  # every column moves with its row


@pytest.mark.parametrize("seed", range(40))
def test_a_split_block_keeps_every_tick_in_place_for_every_merchant_shard(seed: int) -> None:
    rng = random.Random(seed)
    block = _random_block(rng, 0, rng.randrange(0, 12))
    merchant_keys = shard_keys("m", 3, 1)
    parts = _split(block, merchant_keys)
    if block.ticks:
        assert set(parts) == set(merchant_keys)
    whole = _interleaved(block)
    for key in merchant_keys:
        mine = [
            item
            for item, env_key in zip(whole, _owners(block, merchant_keys), strict=True)
            if env_key in (None, key)
        ]
        assert (_interleaved(parts[key]) if key in parts else []) == mine


def _owners(block: FeatureBlock, merchant_keys: tuple[str, ...]) -> list[str | None]:
    """The merchant shard of each item of ``_interleaved(block)``; None for a tick (all)."""
    owners: list[str | None] = []
    rows = iter(block.txns.merchant_id)
    for kind, _ in _interleaved(block):
        owners.append(shard_of(merchant_keys, next(rows)) if kind == "row" else None)
    return owners
