"""Transaction, Chargeback and output models against the data contract's examples and rules."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from schemas.records import (
    WIRE_MODELS,
    Chargeback,
    DeadLetter,
    Drift,
    Score,
    Transaction,
    WindowAggregate,
)
from schemas.timefmt import MAX_MS, MIN_MS, format_ms, parse_event_time

# Verbatim from the contract (docs/contract.md).
CONTRACT_TRANSACTION = """
{"event_id": "tx-1", "card_id": "c-42", "merchant_id": "m-7", "amount": 12.5,
 "currency": "EUR", "event_time": "2026-11-23T10:00:00.123Z",
 "country": "CZ", "channel": "ecom", "device_id": "d-1"}
"""
CONTRACT_CHARGEBACK = """
{"event_id": "cb-1", "txn_event_id": "tx-1", "merchant_id": "m-7",
 "card_id": "c-42", "event_time": "2026-11-23T10:03:00Z"}
"""
# The contract's Score example, less its "...": 0.0 placeholder feature.
CONTRACT_SCORE = """
{"event_id": "tx-1", "card_id": "c-42", "merchant_id": "m-7",
 "event_time": "2026-11-23T10:00:00.123Z", "score": 0.031,
 "decision": "approve", "model_version": "fraud-gbt-3", "fallback": false,
 "late": false, "features": {"card_count_1m": 1},
 "shadow": {"model_version": "fraud-gbt-4", "score": 0.029},
 "processed_at": "2026-11-23T10:00:00.140Z"}
"""
CONTRACT_DRIFT = """
{"signal": "card_amount_1h", "kind": "feature", "model_version": "fraud-gbt-3",
 "window_start": "...", "window_end": "...", "n": 5000, "mean": 41.2,
 "reference_mean": 39.8, "psi": 0.04, "ks": 0.03, "detector": "adwin",
 "drift": false}
"""
CONTRACT_DEAD_LETTER = """
{"reason": "schema", "error": "amount: Input should be greater than or equal to 0",
 "topic": "transactions", "partition": 0, "offset": 1234, "key": "c-42",
 "payload": "<original value>", "payload_encoding": "utf-8",
 "received_at": "2026-11-23T10:00:01Z"}
"""
EXAMPLE_MS = 1_795_428_000_123  # 2026-11-23T10:00:00.123Z


def _txn(**changes: Any) -> dict[str, Any]:
    """The contract's example transaction as a dict, with some fields changed."""
    data: dict[str, Any] = json.loads(CONTRACT_TRANSACTION)
    data.update(changes)
    return data


def _rejected_fields(data: dict[str, Any]) -> set[str]:
    with pytest.raises(ValidationError) as info:
        Transaction.model_validate_json(json.dumps(data))
    return {str(err["loc"][0]) for err in info.value.errors()}


def test_contract_example_transaction_is_accepted() -> None:
    txn = Transaction.model_validate_json(CONTRACT_TRANSACTION)
    assert txn.event_id == "tx-1"
    assert txn.card_id == "c-42"
    assert txn.merchant_id == "m-7"
    assert txn.amount == 12.5
    assert txn.currency == "EUR"
    assert txn.event_time == EXAMPLE_MS
    assert (txn.country, txn.channel, txn.device_id) == ("CZ", "ecom", "d-1")


def test_optional_fields_may_be_missing() -> None:
    data = _txn()
    for name in ("country", "channel", "device_id"):
        del data[name]
    txn = Transaction.model_validate_json(json.dumps(data))
    assert (txn.country, txn.channel, txn.device_id) == (None, None, None)


@pytest.mark.parametrize("field", ["event_id", "card_id", "merchant_id"])
@pytest.mark.parametrize("value", ["", "x" * 129, 42, None], ids=["empty", "129", "int", "null"])
def test_bad_identifiers_are_rejected(field: str, value: object) -> None:
    assert _rejected_fields(_txn(**{field: value})) == {field}


@pytest.mark.parametrize("field", ["event_id", "card_id", "merchant_id"])
def test_identifiers_of_128_chars_are_accepted(field: str) -> None:
    txn = Transaction.model_validate_json(json.dumps(_txn(**{field: "x" * 128})))
    assert getattr(txn, field) == "x" * 128


@pytest.mark.parametrize("field", ["event_id", "card_id", "merchant_id", "amount", "currency"])
def test_missing_required_field_is_rejected(field: str) -> None:
    data = _txn()
    del data[field]
    assert _rejected_fields(data) == {field}


def test_missing_event_time_is_rejected() -> None:
    data = _txn()
    del data["event_time"]
    assert _rejected_fields(data) == {"event_time"}


@pytest.mark.parametrize(
    "amount",
    [-0.01, -1, math.inf, -math.inf, math.nan, 1e9 + 1, 1e10, "12.5", True, None],
    ids=["neg-cent", "neg", "inf", "-inf", "nan", "over-1e9", "1e10", "string", "bool", "null"],
)
def test_bad_amounts_are_rejected(amount: object) -> None:
    with pytest.raises(ValidationError) as info:
        Transaction.model_validate(_txn(amount=amount))
    assert {str(err["loc"][0]) for err in info.value.errors()} == {"amount"}


@pytest.mark.parametrize("raw", ["Infinity", "-Infinity", "NaN", "1e400"])
def test_non_finite_json_amounts_are_rejected(raw: str) -> None:
    text = CONTRACT_TRANSACTION.replace('"amount": 12.5', f'"amount": {raw}')
    assert raw in text
    with pytest.raises(ValidationError):
        Transaction.model_validate_json(text)


def test_negative_amount_error_message_matches_contract() -> None:
    with pytest.raises(ValidationError) as info:
        Transaction.model_validate_json(json.dumps(_txn(amount=-1)))
    (err,) = info.value.errors()
    assert err["loc"] == ("amount",)
    assert err["msg"] == "Input should be greater than or equal to 0"


@pytest.mark.parametrize("amount", [0, 0.0, 1e9, 7])
def test_amount_bounds_are_inclusive(amount: float) -> None:
    assert Transaction.model_validate_json(json.dumps(_txn(amount=amount))).amount == amount


@pytest.mark.parametrize(
    "currency", ["eur", "Eur", "EURO", "EU", "", "E1R", "EUR\n", " EUR", 978, None]
)
def test_bad_currencies_are_rejected(currency: object) -> None:
    assert _rejected_fields(_txn(currency=currency)) == {"currency"}


@pytest.mark.parametrize(
    "event_time",
    [
        "2026-11-23T10:00:00.123",  # no offset
        "2026-11-23T10:00:00",  # no offset
        "2026-11-23",  # a date only
        "10:00:00Z",  # a time only
        "yesterday",
        "",
        True,  # bool is an int subclass in Python, but not a timestamp
        False,
        1_795_428_000_123.0,  # float milliseconds
        1.5,
        -1,  # before 1970
        MAX_MS + 1,  # after 9999
        "1969-12-31T23:59:59.999Z",
        None,
        [EXAMPLE_MS],
    ],
)
def test_bad_event_times_are_rejected(event_time: object) -> None:
    assert _rejected_fields(_txn(event_time=event_time)) == {"event_time"}


def test_epoch_ms_integer_is_accepted() -> None:
    txn = Transaction.model_validate_json(json.dumps(_txn(event_time=EXAMPLE_MS)))
    assert txn.event_time == EXAMPLE_MS


@pytest.mark.parametrize("ms", [MIN_MS, MAX_MS])
def test_epoch_ms_range_is_inclusive(ms: int) -> None:
    assert Transaction.model_validate_json(json.dumps(_txn(event_time=ms))).event_time == ms


@pytest.mark.parametrize(
    ("text", "expected_ms"),
    [
        ("2026-11-23T10:00:00.123Z", EXAMPLE_MS),
        ("2026-11-23T10:00:00.123+00:00", EXAMPLE_MS),
        ("2026-11-23T11:00:00.123+01:00", EXAMPLE_MS),
        ("2026-11-23T04:30:00.123-05:30", EXAMPLE_MS),
        ("2026-11-24T01:00:00.123+15:00", EXAMPLE_MS),
        ("2026-11-23T10:00:00Z", EXAMPLE_MS - 123),
        ("1970-01-01T01:00:00+01:00", 0),
    ],
)
def test_rfc3339_with_offset_is_converted_to_utc_ms(text: str, expected_ms: int) -> None:
    assert parse_event_time(text) == expected_ms
    txn = Transaction.model_validate_json(json.dumps(_txn(event_time=text)))
    assert txn.event_time == expected_ms


def test_unknown_fields_are_ignored() -> None:
    txn = Transaction.model_validate_json(json.dumps(_txn(loyalty_tier="gold", nested={"a": 1})))
    assert txn == Transaction.model_validate_json(CONTRACT_TRANSACTION)
    assert "loyalty_tier" not in txn.model_dump()


def test_contract_example_chargeback_is_accepted() -> None:
    cb = Chargeback.model_validate_json(CONTRACT_CHARGEBACK)
    assert cb.txn_event_id == "tx-1"
    assert cb.card_id == "c-42"
    assert cb.event_time == EXAMPLE_MS - 123 + 3 * 60_000


@pytest.mark.parametrize("model", list(WIRE_MODELS.values()), ids=list(WIRE_MODELS))
def test_every_wire_model_is_frozen(model: type[BaseModel]) -> None:
    assert model.model_config.get("frozen") is True


def test_transaction_instances_are_immutable() -> None:
    txn = Transaction.model_validate_json(CONTRACT_TRANSACTION)
    with pytest.raises(ValidationError):
        txn.amount = 1.0  # type: ignore[misc]
    assert txn.amount == 12.5


def test_contract_example_score_validates() -> None:
    score = Score.model_validate_json(CONTRACT_SCORE)
    assert score.score == 0.031
    assert score.decision == "approve"
    assert score.features == {"card_count_1m": 1.0}
    assert score.shadow is not None
    assert score.shadow.model_version == "fraud-gbt-4"


def test_score_allows_no_shadow() -> None:
    data = json.loads(CONTRACT_SCORE)
    data["shadow"] = None
    assert Score.model_validate(data).shadow is None


@pytest.mark.parametrize(
    "change",
    [{"score": 1.01}, {"score": -0.1}, {"decision": "maybe"}, {"surprise": 1}],
    ids=["score-high", "score-low", "decision", "extra-field"],
)
def test_score_rejects_what_the_contract_rules_out(change: dict[str, Any]) -> None:
    data = json.loads(CONTRACT_SCORE)
    data.update(change)
    with pytest.raises(ValidationError):
        Score.model_validate(data)


def test_contract_example_drift_validates() -> None:
    drift = Drift.model_validate_json(CONTRACT_DRIFT)
    assert (drift.kind, drift.n, drift.drift) == ("feature", 5000, False)


def test_window_aggregate_validates() -> None:
    agg = WindowAggregate(
        merchant_id="m-7",
        window_start="2026-11-23T10:00:00.000Z",
        window_end="2026-11-23T10:05:00.000Z",
        txn_count=3,
        amount_sum=30.0,
        chargeback_count=1,
        chargeback_rate=1 / 3,
    )
    assert agg.txn_count == 3


def test_contract_example_dead_letter_validates() -> None:
    dl = DeadLetter.model_validate_json(CONTRACT_DEAD_LETTER)
    assert (dl.reason, dl.topic, dl.partition, dl.offset, dl.key) == (
        "schema",
        "transactions",
        0,
        1234,
        "c-42",
    )


@pytest.mark.parametrize(
    "change",
    [{"reason": "other"}, {"payload_encoding": "latin-1"}, {"surprise": 1}],
    ids=["reason", "encoding", "extra-field"],
)
def test_dead_letter_rejects_what_the_contract_rules_out(change: dict[str, Any]) -> None:
    data = json.loads(CONTRACT_DEAD_LETTER)
    data.update(change)
    with pytest.raises(ValidationError):
        DeadLetter.model_validate(data)


@pytest.mark.parametrize("reason", ["json", "schema", "timestamp", "oversize", "duplicate"])
def test_dead_letter_accepts_every_contract_reason(reason: str) -> None:
    data = json.loads(CONTRACT_DEAD_LETTER)
    data["reason"] = reason
    assert DeadLetter.model_validate(data).reason == reason


@given(st.integers(min_value=MIN_MS, max_value=MAX_MS))
def test_format_then_parse_round_trips(ms: int) -> None:
    text = format_ms(ms)
    assert text.endswith("Z")
    assert parse_event_time(text) == ms


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (EXAMPLE_MS, "2026-11-23T10:00:00.123Z"),
        (1_795_428_000_999, "2026-11-23T10:00:00.999Z"),
        (MAX_MS, "9999-12-31T23:59:59.999Z"),
    ],
)
def test_format_ms_is_rfc3339_utc_with_milliseconds(ms: int, text: str) -> None:
    assert format_ms(ms) == text


@pytest.mark.parametrize("text", ["2026-11-23T10:00:00.123z", "2026-11-23t10:00:00.123z"])
def test_lower_case_z_is_rfc3339(text: str) -> None:
    # RFC 3339 section 5.6: "T" and "Z" may be lower case.
    assert parse_event_time(text) == EXAMPLE_MS


def test_lower_case_t_is_rfc3339() -> None:
    assert parse_event_time("2026-11-23t10:00:00.123Z") == EXAMPLE_MS
