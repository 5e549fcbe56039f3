"""Envelopes crossing processes: a shard's batch pickles to columns and comes back exact."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from operators.columns import BLOCK_COLUMNS
from operators.messages import CbEnvelope, FeatureBlock, RawRecord, ShardInput, TxnEnvelope
from schemas.records import Chargeback, Transaction

T0 = 1_795_392_000_000


def _envelope(i: int, body: bytes, *, late: bool = False) -> TxnEnvelope:
    raw = RawRecord("transactions", i % 3, 100 + i, f"c-{i}".encode(), body, T0 + i)
    return TxnEnvelope(Transaction.model_validate_json(body), raw, late, T0 - 5000 + i)


FULL = (
    b'{"event_id":"tx-1","card_id":"c-1","merchant_id":"m-7","amount":12.5,"currency":"EUR",'
    b'"event_time":"2026-11-23T10:00:00.123Z","country":"CZ","channel":"ecom","device_id":"d-1"}'
)
# Optional fields left out, one unknown field: the fields set differs from the full one.
SPARSE = (
    b'{"event_id":"tx-2","card_id":"c-2","merchant_id":"m-8","amount":0,"currency":"USD",'
    b'"event_time":1795392000000,"loyalty":"gold"}'
)


def _assert_same_envelope(got: TxnEnvelope, want: TxnEnvelope) -> None:
    assert got == want
    assert got.raw.source == want.raw.source == f"transactions#{want.raw.partition}"
    assert type(got.txn) is Transaction
    assert got.txn.model_fields_set == want.txn.model_fields_set
    assert got.txn.model_dump() == want.txn.model_dump()


def _block(envs: list[TxnEnvelope], ticks: list[tuple[int, int]]) -> FeatureBlock:
    width = len(BLOCK_COLUMNS)
    features = np.arange(len(envs) * width, dtype=np.float64).reshape(len(envs), width) / 7
    if len(envs):
        # Values whose bits a conversion could lose: NaN, a negative zero, the extremes.
        features[0, :4] = [math.nan, -0.0, 5e-324, 1.7976931348623157e308]
    marks = np.array([T0 + i for i in range(len(envs))], dtype=np.int64)
    return FeatureBlock(envs, features, marks, ticks)


def _assert_same_block(got: FeatureBlock | None, want: FeatureBlock | None) -> None:
    assert got is not None and want is not None
    assert len(got.envs) == len(want.envs)
    for g, w in zip(got.envs, want.envs, strict=True):
        _assert_same_envelope(g, w)
    assert got.features.dtype == np.float64 and got.watermarks.dtype == np.int64
    assert got.features.shape == want.features.shape
    assert got.features.tobytes() == want.features.tobytes()  # bit for bit
    assert got.watermarks.tolist() == want.watermarks.tolist()
    assert got.ticks == want.ticks


def test_raw_record_round_trip_keeps_its_source() -> None:
    raw = RawRecord("chargebacks", 3, 7, b"k", b"{}", T0)
    got = pickle.loads(pickle.dumps(raw, pickle.HIGHEST_PROTOCOL))
    assert got == raw
    assert got.source == "chargebacks#3"
    assert repr(got) == repr(raw)


def test_shard_input_round_trip_is_exact() -> None:
    full, sparse = _envelope(1, FULL), _envelope(2, SPARSE, late=True)
    cb = CbEnvelope(
        Chargeback(event_id="cb-1", txn_event_id="tx-1", merchant_id="m-7", event_time=T0 + 60_000),
        RawRecord("chargebacks", 0, 7, None, b"{}", T0 + 60_000),
        T0,
    )
    # A duplicate's tick before the first row, two between rows, one after the last.
    block = _block([full, sparse, full], [(0, T0 - 1), (1, T0 + 1), (1, T0 + 2), (3, T0 + 9)])
    batch = ShardInput("c3", T0 + 9, True, [full, sparse], block, [cb], "m5")

    got = pickle.loads(pickle.dumps(batch, pickle.HIGHEST_PROTOCOL))

    assert (got.origin, got.watermark, got.idle, got.target) == ("c3", T0 + 9, True, "m5")
    for g, w in zip(got.txns, batch.txns, strict=True):
        _assert_same_envelope(g, w)
    _assert_same_block(got.featured, batch.featured)
    assert got.chargebacks == [cb]

    plain = ShardInput("transactions#0", T0, False, [full], None, [], "c1")
    again = pickle.loads(pickle.dumps(plain, pickle.HIGHEST_PROTOCOL))
    assert again.featured is None and again.chargebacks == []
    _assert_same_envelope(again.txns[0], full)


def test_a_block_pickles_its_features_as_one_array() -> None:
    env = _envelope(1, FULL)
    one, many = _block([env], []), _block([env] * 200, [])
    small = len(pickle.dumps(one, pickle.HIGHEST_PROTOCOL))
    large = len(pickle.dumps(many, pickle.HIGHEST_PROTOCOL))
    # Each further row: its envelope's row (shared objects are memoised) and the raw
    # float64 and int64 bytes of its features and watermark, no float object per value.
    per_row = (large - small) / 199
    assert per_row < 8 * (len(BLOCK_COLUMNS) + 1) + 80


@pytest.mark.parametrize(
    ("rows", "ticks"),
    [
        ([0, 2], [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]),
        ([1, 3], [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]),
        ([], [(2, 7)]),
    ],
)
def test_take_keeps_each_tick_at_its_place_among_the_rows(
    rows: list[int], ticks: list[tuple[int, int]]
) -> None:
    envs = [_envelope(i, FULL) for i in range(4)]
    block = _block(envs, ticks)
    part = block.take(rows)
    assert [e.raw.offset for e in part.envs] == [100 + r for r in rows]
    assert part.features.tobytes() == block.features[rows].tobytes()
    assert part.watermarks.tolist() == [T0 + r for r in rows]
    # A tick at original place p follows exactly the taken rows before p.
    assert part.ticks == [(sum(r < pos for r in rows), wm) for pos, wm in ticks]
