"""Envelopes crossing processes: a shard's batch pickles to rows and comes back exact."""

from __future__ import annotations

import pickle

from operators.messages import (
    CbEnvelope,
    Featured,
    RawRecord,
    ShardInput,
    Tick,
    TxnEnvelope,
)
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
    assert type(got.txn) is Transaction
    assert got.txn.model_fields_set == want.txn.model_fields_set
    assert got.txn.model_dump() == want.txn.model_dump()


def test_shard_input_round_trip_is_exact() -> None:
    full, sparse = _envelope(1, FULL), _envelope(2, SPARSE, late=True)
    cb = CbEnvelope(
        Chargeback(event_id="cb-1", txn_event_id="tx-1", merchant_id="m-7", event_time=T0 + 60_000),
        RawRecord("chargebacks", 0, 7, None, b"{}", T0 + 60_000),
        T0,
    )
    ordered: list[Featured | CbEnvelope | Tick] = [
        Featured(full, {"card_count_1m": 1.0, "card_amount_1m": 12.5}, T0),
        Tick(T0 + 1),
        cb,
        # The same names in another order: the order survives.
        Featured(sparse, {"card_amount_1m": 0.0, "card_count_1m": 2.0}, T0 + 2),
        Featured(full, {}, T0 + 3),
    ]
    batch = ShardInput("c3", T0 + 9, True, [full, sparse], ordered, "m5")

    got = pickle.loads(pickle.dumps(batch, pickle.HIGHEST_PROTOCOL))

    assert got == batch
    for g, w in zip(got.txns, batch.txns, strict=True):
        _assert_same_envelope(g, w)
    for item, want in zip(got.ordered, batch.ordered, strict=True):
        assert type(item) is type(want)
        if isinstance(item, Featured) and isinstance(want, Featured):
            _assert_same_envelope(item.env, want.env)
            assert list(item.features.items()) == list(want.features.items())


def test_feature_names_are_written_once_per_batch() -> None:
    env = _envelope(1, FULL)
    names = [f"feature_{i}" for i in range(14)]

    def batch(n: int) -> ShardInput:
        rows: list[Featured | CbEnvelope | Tick] = [
            Featured(env, {k: float(i) for k in names}, T0) for i in range(n)
        ]
        return ShardInput("c0", T0, False, [], rows, "m0")

    data = pickle.dumps(batch(100), pickle.HIGHEST_PROTOCOL)
    assert data.count(b"feature_13") == 1
