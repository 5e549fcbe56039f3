"""Transaction features, from the record alone."""

from __future__ import annotations

import math

import pytest

from operators.columns import TXN_FEATURES
from operators.features import ALL_FEATURES, txn_features
from schemas.records import Transaction


def _txn(**changes: object) -> Transaction:
    data: dict[str, object] = {
        "event_id": "tx-1",
        "card_id": "c-42",
        "merchant_id": "m-7",
        "amount": 12.5,
        "currency": "EUR",
        "event_time": "2026-11-23T10:00:00.123Z",
    }
    data.update(changes)
    return Transaction.model_validate(data)


def test_txn_features_are_exactly_the_declared_names() -> None:
    assert list(txn_features(_txn())) == list(TXN_FEATURES)
    assert len(set(ALL_FEATURES)) == len(ALL_FEATURES)
    assert set(TXN_FEATURES) <= set(ALL_FEATURES)


def test_amount_features() -> None:
    feats = txn_features(_txn(amount=99.0))
    assert feats["txn_amount"] == 99.0
    assert feats["txn_log_amount"] == pytest.approx(math.log(100.0))
    assert txn_features(_txn(amount=0))["txn_log_amount"] == 0.0


@pytest.mark.parametrize(
    ("event_time", "hour"),
    [
        ("2026-11-23T10:00:00.123Z", 10.0),
        ("2026-11-23T10:59:59.999+01:00", 9.0),  # the UTC hour, not the local one
        ("2026-11-23T23:59:59.999Z", 23.0),
        ("2026-11-24T00:00:00Z", 0.0),
        (0, 0.0),
    ],
)
def test_hour_is_utc(event_time: object, hour: float) -> None:
    assert txn_features(_txn(event_time=event_time))["txn_hour_utc"] == hour


@pytest.mark.parametrize(
    ("channel", "ecom"), [("ecom", 1.0), ("pos", 0.0), (None, 0.0), ("ECOM", 0.0)]
)
def test_is_ecom(channel: str | None, ecom: float) -> None:
    assert txn_features(_txn(channel=channel))["txn_is_ecom"] == ecom


def test_has_device() -> None:
    assert txn_features(_txn(device_id="d-1"))["txn_has_device"] == 1.0
    assert txn_features(_txn())["txn_has_device"] == 0.0
