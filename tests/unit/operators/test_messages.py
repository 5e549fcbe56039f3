"""Batches crossing processes: a shard's batch pickles to columns and comes back exact."""

from __future__ import annotations

import math
import pickle
from dataclasses import fields

import numpy as np
import pytest

from operators.columns import BLOCK_COLUMNS
from operators.messages import CbEnvelope, FeatureBlock, RawRecord, ShardInput, TxnColumns
from schemas.records import Chargeback, Transaction
from tests.unit.operators.blocks import TxnRecord, columns_of

T0 = 1_795_392_000_000


def _record(i: int, body: bytes, *, late: bool = False) -> TxnRecord:
    raw = RawRecord("transactions", i % 3, 100 + i, f"c-{i}".encode(), body, T0 + i)
    return TxnRecord(Transaction.model_validate_json(body), raw, late, T0 - 5000 + i)


FULL = (
    b'{"event_id":"tx-1","card_id":"c-1","merchant_id":"m-7","amount":12.5,"currency":"EUR",'
    b'"event_time":"2026-11-23T10:00:00.123Z","country":"CZ","channel":"ecom","device_id":"d-1"}'
)
# Optional fields left out, one unknown field: the fields set differs from the full one.
SPARSE = (
    b'{"event_id":"tx-2","card_id":"c-2","merchant_id":"m-8","amount":0,"currency":"USD",'
    b'"event_time":1795392000000,"loyalty":"gold"}'
)


def _typed(txns: TxnColumns) -> dict[str, list[tuple[str, object]]]:
    """Every column of ``txns``, each value with its type's name."""
    return {
        f.name: [(type(v).__name__, v) for v in getattr(txns, f.name)] for f in fields(TxnColumns)
    }


def _assert_same_columns(got: TxnColumns, want: TxnColumns) -> None:
    assert type(got) is TxnColumns
    assert got == want
    assert _typed(got) == _typed(want)
    assert [r.source for r in got.raw] == [f"transactions#{r.partition}" for r in want.raw]


def _block(txns: TxnColumns, ticks: list[tuple[int, int]]) -> FeatureBlock:
    width, n = len(BLOCK_COLUMNS), len(txns)
    features = np.arange(n * width, dtype=np.float64).reshape(n, width) / 7
    if n:
        # Values whose bits a conversion could lose: NaN, a negative zero, the extremes.
        features[0, :4] = [math.nan, -0.0, 5e-324, 1.7976931348623157e308]
    marks = np.array([T0 + i for i in range(n)], dtype=np.int64)
    return FeatureBlock(txns, features, marks, ticks)


def _assert_same_block(got: FeatureBlock | None, want: FeatureBlock | None) -> None:
    assert got is not None and want is not None
    _assert_same_columns(got.txns, want.txns)
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
    full, sparse = _record(1, FULL), _record(2, SPARSE, late=True)
    cb = CbEnvelope(
        Chargeback(event_id="cb-1", txn_event_id="tx-1", merchant_id="m-7", event_time=T0 + 60_000),
        RawRecord("chargebacks", 0, 7, None, b"{}", T0 + 60_000),
        T0,
    )
    # A duplicate's tick before the first row, two between rows, one after the last.
    ticks = [(0, T0 - 1), (1, T0 + 1), (1, T0 + 2), (3, T0 + 9)]
    block = _block(columns_of([full, sparse, full]), ticks)
    batch = ShardInput("c3", T0 + 9, True, columns_of([full, sparse]), block, [cb], "m5")

    got = pickle.loads(pickle.dumps(batch, pickle.HIGHEST_PROTOCOL))

    assert (got.origin, got.watermark, got.idle, got.target) == ("c3", T0 + 9, True, "m5")
    _assert_same_columns(got.txns, batch.txns)
    assert got.txns.ecom == [True, False] and got.txns.has_device == [True, False]
    assert got.txns.amount == [12.5, 0.0] and type(got.txns.amount[1]) is float
    _assert_same_block(got.featured, batch.featured)
    assert got.chargebacks == [cb]

    plain = ShardInput("transactions#0", T0, False, columns_of([full]), None, [], "c1")
    again = pickle.loads(pickle.dumps(plain, pickle.HIGHEST_PROTOCOL))
    assert again.featured is None and again.chargebacks == []
    _assert_same_columns(again.txns, plain.txns)
    empty = pickle.loads(pickle.dumps(TxnColumns(), pickle.HIGHEST_PROTOCOL))
    assert empty == TxnColumns() and not empty


def test_take_rows_and_concat_keep_every_column_in_step() -> None:
    txns = columns_of([_record(i, FULL if i % 2 else SPARSE, late=i == 3) for i in range(5)])
    taken = txns.take([4, 1, 3])
    assert [r.offset for r in taken.raw] == [104, 101, 103]
    assert taken.late == [False, False, True] and taken.ecom == [False, True, True]
    assert taken.watermark == [T0 - 5000 + i for i in (4, 1, 3)]
    assert txns.take([2]).event_time == [txns.event_time[2]]
    _assert_same_columns(txns.take([]), TxnColumns())
    _assert_same_columns(TxnColumns.concat([txns.rows(0, 2), txns.rows(2, 5)]), txns)


def test_a_block_pickles_its_features_as_one_array() -> None:
    rec = _record(1, FULL)
    one, many = _block(columns_of([rec]), []), _block(columns_of([rec] * 200), [])
    small = len(pickle.dumps(one, pickle.HIGHEST_PROTOCOL))
    large = len(pickle.dumps(many, pickle.HIGHEST_PROTOCOL))
    # Each further row: its columns' values (shared objects are memoised) and the raw
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
    block = _block(columns_of([_record(i, FULL) for i in range(4)]), ticks)
    part = block.take(rows)
    assert [r.offset for r in part.txns.raw] == [100 + r for r in rows]
    assert part.features.tobytes() == block.features[rows].tobytes()
    assert part.watermarks.tolist() == [T0 + r for r in rows]
    # A tick at original place p follows exactly the taken rows before p.
    assert part.ticks == [(sum(r < pos for r in rows), wm) for pos, wm in ticks]
