"""Decoding raw records: valid transactions in order, every rejected record a dead letter."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

import pytest

from operators import decode
from operators.decode import DeadLetters, DecodeConfig, PartitionDecoder, dead_letter
from operators.decode_fast import fast_transactions
from operators.messages import OutMessage, PartitionBatch, RawRecord
from schemas.records import DeadLetter, DeadLetterReason, Transaction
from schemas.settings import Settings
from schemas.timefmt import format_ms

TOPIC = "transactions"
DEAD_TOPIC = "dead-letters-test"
LIMIT = 512
EXAMPLE_MS = 1_795_428_000_123  # 2026-11-23T10:00:00.123Z
NOW_MS = 1_795_428_001_000  # 2026-11-23T10:00:01.000Z


def _txn(event_id: str, *, card_id: str = "c-42", **changes: Any) -> bytes:
    data: dict[str, Any] = {
        "event_id": event_id,
        "card_id": card_id,
        "merchant_id": "m-7",
        "amount": 12.5,
        "currency": "EUR",
        "event_time": "2026-11-23T10:00:00.123Z",
    }
    data.update(changes)
    return json.dumps(data).encode()


class _Clock:
    """An injected clock that ticks one millisecond per call."""

    def __init__(self, start: int) -> None:
        self.next = start
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        self.next += 1
        return self.next - 1


def _decoder(clock: _Clock, reasons: list[DeadLetterReason] | None = None) -> PartitionDecoder:
    sink = reasons if reasons is not None else []
    return PartitionDecoder(
        DecodeConfig(dead_letter_topic=DEAD_TOPIC, max_message_bytes=LIMIT),
        source=f"{TOPIC}#3",
        kind="transaction",
        resume=None,
        dead_letters=DeadLetters(DEAD_TOPIC, now_ms=clock, on_dead=sink.append),
        wall_clock=lambda: NOW_MS,
    )


def _records(
    values: Sequence[tuple[bytes | None, bytes | None]], partition: int = 3
) -> list[RawRecord]:
    """Records at offsets 100, 101, ... from (key, value) pairs."""
    return [
        RawRecord(TOPIC, partition, 100 + i, key, value, EXAMPLE_MS)
        for i, (key, value) in enumerate(values)
    ]


def _dead_letter(msg: OutMessage) -> DeadLetter:
    assert msg.topic == DEAD_TOPIC
    return DeadLetter.model_validate_json(msg.value)


def _decode_one(value: bytes | None, key: bytes | None = b"c-42") -> tuple[DeadLetter, OutMessage]:
    out = _decoder(_Clock(NOW_MS)).decode(_records([(key, value)]))
    assert not out.txns
    (msg,) = out.dead
    return _dead_letter(msg), msg


NEGATIVE = _txn("tx-neg", amount=-1)
BAD_JSON = b'{"event_id": "tx-x", '
NOT_UTF8 = b'{"event_id": "tx-\xff\xfe"}'
OVERSIZE = _txn("tx-big", padding="x" * LIMIT)


@pytest.fixture
def mixed() -> tuple[list[RawRecord], PartitionBatch, list[DeadLetterReason], _Clock]:
    records = _records(
        [
            (b"c-1", _txn("tx-1", card_id="c-1")),  # 100 valid
            (b"c-2", BAD_JSON),  # 101 json
            (None, _txn("tx-2", card_id="c-2")),  # 102 valid, no key
            (b"k", None),  # 103 json: tombstone
            (b"c-3", NEGATIVE),  # 104 schema
            (b"\xff", NOT_UTF8),  # 105 json, base64 payload and key
            (b"c-4", b"[1, 2]"),  # 106 schema: not an object
            (b"c-5", OVERSIZE),  # 107 oversize
            (b"c-1", _txn("tx-3", card_id="c-1")),  # 108 valid
        ]
    )
    reasons: list[DeadLetterReason] = []
    clock = _Clock(NOW_MS)
    out = _decoder(clock, reasons).decode(records)
    return records, out, reasons, clock


def test_valid_records_keep_order_and_coordinates(
    mixed: tuple[list[RawRecord], PartitionBatch, list[DeadLetterReason], _Clock],
) -> None:
    records, out, _, _ = mixed
    assert out.txns.event_id == ["tx-1", "tx-2", "tx-3"]
    assert out.txns.raw == [records[0], records[2], records[8]]
    assert [(r.topic, r.partition, r.offset) for r in out.txns.raw] == [
        (TOPIC, 3, 100),
        (TOPIC, 3, 102),
        (TOPIC, 3, 108),
    ]
    assert out.txns.late == [False, False, False]
    assert out.txns.event_time[0] == EXAMPLE_MS
    assert out.chargebacks == []


def test_every_invalid_record_is_one_dead_letter_in_order(
    mixed: tuple[list[RawRecord], PartitionBatch, list[DeadLetterReason], _Clock],
) -> None:
    records, out, reasons, clock = mixed
    letters = [_dead_letter(msg) for msg in out.dead]
    assert [dl.offset for dl in letters] == [101, 103, 104, 105, 106, 107]
    expected: list[DeadLetterReason] = ["json", "json", "schema", "json", "schema", "oversize"]
    assert [dl.reason for dl in letters] == expected
    assert reasons == expected
    assert all((dl.topic, dl.partition) == (TOPIC, 3) for dl in letters)
    # Each dead letter keeps its record's original key, both on the message and in the body.
    by_offset = {r.offset: r for r in records}
    assert [msg.key for msg in out.dead] == [by_offset[dl.offset].key for dl in letters]
    assert [dl.key for dl in letters] == [
        "c-2",
        "k",
        "c-3",
        base64.b64encode(b"\xff").decode(),
        "c-4",
        "c-5",
    ]
    # One clock reading per dead letter, in order.
    assert clock.calls == len(letters)
    assert [dl.received_at for dl in letters] == [format_ms(NOW_MS + i) for i in range(6)]
    assert len(out.txns) + len(out.dead) == len(records)


def test_bad_json_is_a_json_dead_letter() -> None:
    dl, msg = _decode_one(BAD_JSON)
    assert dl.reason == "json"
    assert dl.payload == BAD_JSON.decode()
    assert dl.payload_encoding == "utf-8"
    assert (dl.topic, dl.partition, dl.offset, dl.key) == (TOPIC, 3, 100, "c-42")
    assert msg.key == b"c-42"
    assert dl.received_at == "2026-11-23T10:00:01.000Z"


def test_missing_value_is_a_json_dead_letter() -> None:
    dl, _ = _decode_one(None)
    assert dl.reason == "json"
    assert dl.payload == ""
    assert dl.payload_encoding == "utf-8"


def test_empty_value_is_a_json_dead_letter() -> None:
    dl, _ = _decode_one(b"")
    assert dl.reason == "json"


@pytest.mark.parametrize(
    "value",
    [NOT_UTF8, b"\xff\xfe\x00\x01", _txn("tx-1").replace(b"tx-1", b"tx-\xe9")],
    ids=["partial-json", "binary", "latin-1-in-valid-json"],
)
def test_non_utf8_is_a_json_dead_letter_with_base64_payload(value: bytes) -> None:
    dl, _ = _decode_one(value)
    assert dl.reason == "json"
    assert dl.payload_encoding == "base64"
    assert base64.b64decode(dl.payload, validate=True) == value


def test_non_utf8_key_is_kept_on_the_message() -> None:
    dl, msg = _decode_one(BAD_JSON, key=b"\x80key")
    assert msg.key == b"\x80key"
    assert base64.b64decode(dl.key or "") == b"\x80key"


def test_missing_key_stays_missing() -> None:
    dl, msg = _decode_one(BAD_JSON, key=None)
    assert msg.key is None
    assert dl.key is None


@pytest.mark.parametrize(
    "value",
    [b"[1, 2]", b'"tx"', b"12", b"null", b"true"],
    ids=["list", "str", "int", "null", "bool"],
)
def test_json_that_is_not_an_object_is_a_schema_dead_letter(value: bytes) -> None:
    dl, _ = _decode_one(value)
    assert dl.reason == "schema"
    assert dl.payload == value.decode()


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (_txn("tx-1", currency="eur"), "currency"),
        (_txn("tx-1", event_time="2026-11-23T10:00:00"), "event_time"),
        (_txn("tx-1", amount="12.5"), "amount"),
        (_txn("", card_id="c-1"), "event_id"),
        (_txn("tx-1", event_time=1_795_428_000_123.0), "event_time"),
    ],
)
def test_contract_violations_are_schema_dead_letters(value: bytes, field: str) -> None:
    dl, _ = _decode_one(value)
    assert dl.reason == "schema"
    assert dl.error.startswith(f"{field}: ")
    assert dl.payload == value.decode()


def test_negative_amount_error_matches_contract() -> None:
    dl, _ = _decode_one(NEGATIVE)
    assert dl.reason == "schema"
    assert "amount: Input should be greater than or equal to 0" in dl.error
    assert dl.payload == NEGATIVE.decode()
    assert dl.payload_encoding == "utf-8"


def test_oversize_payload_is_cut_to_the_limit() -> None:
    assert len(OVERSIZE) > LIMIT
    dl, _ = _decode_one(OVERSIZE)
    assert dl.reason == "oversize"
    assert dl.payload == OVERSIZE[:LIMIT].decode()
    assert str(len(OVERSIZE)) in dl.error
    assert str(LIMIT) in dl.error


def test_oversize_wins_over_bad_json() -> None:
    value = b"\xff" * (LIMIT + 1)
    dl, _ = _decode_one(value)
    assert dl.reason == "oversize"
    assert dl.payload_encoding == "base64"
    assert base64.b64decode(dl.payload) == value[:LIMIT]


def test_value_exactly_at_the_limit_is_not_oversize() -> None:
    base = _txn("tx-1", padding="")
    value = _txn("tx-1", padding="x" * (LIMIT - len(base)))
    assert len(value) == LIMIT
    out = _decoder(_Clock(NOW_MS)).decode(_records([(b"c-42", value)]))
    assert out.txns.event_id == ["tx-1"]
    assert out.dead == []


def test_unknown_fields_do_not_reject_a_record() -> None:
    out = _decoder(_Clock(NOW_MS)).decode(_records([(b"c-42", _txn("tx-1", tier="gold"))]))
    assert out.txns.event_id == ["tx-1"]


def test_valid_batch_reads_no_clock() -> None:
    clock = _Clock(NOW_MS)
    out = _decoder(clock).decode(_records([(b"c-42", _txn(f"tx-{i}")) for i in range(5)]))
    assert len(out.txns) == 5
    assert out.dead == []
    assert clock.calls == 0


def _times(decoder: PartitionDecoder, event_times: list[int]) -> PartitionBatch:
    """Decode transactions with the given event times, all with Kafka timestamp EXAMPLE_MS."""
    values = [(b"c-42", _txn(f"tx-{i}", event_time=t)) for i, t in enumerate(event_times)]
    return decoder.decode(_records(values))


def test_far_future_record_is_a_timestamp_dead_letter_and_changes_nothing() -> None:
    reasons: list[DeadLetterReason] = []
    decoder = _decoder(_Clock(NOW_MS), reasons)
    hour = 3_600_000
    out = _times(decoder, [EXAMPLE_MS, EXAMPLE_MS + 2 * hour, EXAMPLE_MS - 1_000])
    assert reasons == ["timestamp"]
    (msg,) = out.dead
    dl = _dead_letter(msg)
    assert (dl.reason, dl.offset) == ("timestamp", 101)
    # The rejected record did not move the watermark: the next good one is on time.
    assert list(zip(out.txns.event_id, out.txns.late, strict=True)) == [
        ("tx-0", False),
        ("tx-2", False),
    ]
    assert decoder.snapshot() == (EXAMPLE_MS, EXAMPLE_MS - 1_000)


def test_first_record_far_ahead_of_its_kafka_timestamp_is_rejected() -> None:
    reasons: list[DeadLetterReason] = []
    out = _times(_decoder(_Clock(NOW_MS), reasons), [EXAMPLE_MS + 3_600_001])
    assert reasons == ["timestamp"]
    assert not out.txns


def test_lateness_is_judged_against_watermark_minus_allowed_lateness() -> None:
    # Defaults: out-of-orderness 5 s, allowed lateness 60 s; two records agree on the time.
    edge = EXAMPLE_MS - 5_000 - 60_000
    out = _times(_decoder(_Clock(NOW_MS)), [EXAMPLE_MS, EXAMPLE_MS, edge, edge - 1])
    assert out.txns.late == [False, False, False, True]
    assert out.dead == []


def test_resumed_decoder_remembers_its_watermark() -> None:
    first = _decoder(_Clock(NOW_MS))
    _times(first, [EXAMPLE_MS, EXAMPLE_MS])
    resumed = PartitionDecoder(
        DecodeConfig(dead_letter_topic=DEAD_TOPIC, max_message_bytes=LIMIT),
        source=f"{TOPIC}#3",
        kind="transaction",
        resume=first.snapshot(),
        dead_letters=DeadLetters(DEAD_TOPIC, now_ms=_Clock(NOW_MS)),
        wall_clock=lambda: NOW_MS,
    )
    out = _times(resumed, [EXAMPLE_MS - 66_000])
    assert out.txns.late == [True]


@pytest.mark.parametrize("payload_byte", [b"\x01", b"\xff", b"a"])
def test_dead_letter_at_the_largest_limit_stays_under_one_megabyte(payload_byte: bytes) -> None:
    limit = Settings.model_fields["max_message_bytes"].metadata[-1].le
    assert limit == 128 * 1024  # the largest max_message_bytes Settings allows
    decoder = PartitionDecoder(
        DecodeConfig(dead_letter_topic=DEAD_TOPIC, max_message_bytes=limit),
        source=f"{TOPIC}#3",
        kind="transaction",
        resume=None,
        dead_letters=DeadLetters(DEAD_TOPIC, now_ms=_Clock(NOW_MS)),
        wall_clock=lambda: NOW_MS,
    )
    out = decoder.decode(
        _records([(b"k", payload_byte * (limit + 1)), (b"k", payload_byte * limit)])
    )
    oversize, in_limit = out.dead
    assert _dead_letter(oversize).reason == "oversize"
    for msg in (oversize, in_limit):
        assert len(msg.value) < 1_000_000


# ------------------------------------------------------------ poison input (issue 22)


def test_non_utf8_key_says_it_is_base64() -> None:
    dl, _ = _decode_one(BAD_JSON, key=b"\xff\xfe")
    assert (dl.key, dl.key_encoding) == (base64.b64encode(b"\xff\xfe").decode(), "base64")
    dl, _ = _decode_one(BAD_JSON, key=b"c-42")
    assert (dl.key, dl.key_encoding) == ("c-42", "utf-8")
    dl, _ = _decode_one(BAD_JSON, key=None)
    assert (dl.key, dl.key_encoding) == (None, None)


@pytest.mark.parametrize("key_byte", [b"k", b"\x01", b"\xff"])
def test_dead_letter_with_a_huge_key_is_cut_to_fit_and_marked(key_byte: bytes) -> None:
    key = key_byte * 600_000  # the broker takes it; the dead letter would repeat it
    dl, msg = _decode_one(BAD_JSON, key=key)
    assert len(msg.value) + len(msg.key or b"") <= 1_000_000 - 512
    assert dl.truncated
    assert msg.key == key[:1024]
    assert "600000 bytes" in dl.error and "cut to fit" in dl.error
    assert (dl.reason, dl.topic, dl.partition, dl.offset) == ("json", TOPIC, 3, 100)


def test_dead_letter_cut_to_a_small_limit_keeps_its_coordinates_and_fits() -> None:
    for payload in (b"\x00" * 9_000, "é".encode() * 5_000, b"\xff" * 9_000, b"a" * 9_000):
        rec = RawRecord(TOPIC, 1, 7, b"k" * 3_000, payload, EXAMPLE_MS)
        msg = dead_letter(DEAD_TOPIC, rec, "json", "bad", NOW_MS, max_bytes=8_000)
        assert len(msg.value) + len(msg.key or b"") <= 8_000
        dl = _dead_letter(msg)
        assert dl.truncated and (dl.partition, dl.offset) == (1, 7)
        assert len(dl.key or "") == 1024
        assert dl.payload  # something of the payload is kept
    small = dead_letter(
        DEAD_TOPIC, RawRecord(TOPIC, 1, 7, b"k", b"x", 0), "json", "bad", 0, max_bytes=8_000
    )
    assert not _dead_letter(small).truncated


def test_a_key_named_twice_is_a_json_dead_letter() -> None:
    twice = b'{"event_id": "a", "card_id": "c", "merchant_id": "m", "amount": 1, '
    twice += b'"currency": "EUR", "event_time": 1795428000123, "amount": 2}'
    dl, _ = _decode_one(twice)
    assert dl.reason == "json" and "'amount'" in dl.error
    escaped = twice.replace(b'"amount": 2', b'"amoun\\u0074": 2')
    assert _decode_one(escaped)[0].reason == "json"
    spaced = twice.replace(b'"amount": 2', b'"amount" : 2')
    assert _decode_one(spaced)[0].reason == "json"


@pytest.mark.parametrize(
    "value",
    [
        # unknown fields, colons in strings, white space before colons: all still one key each
        _txn("tx-1", note='a": b', extra={"amount": 1, "x": 2}),
        b'{"event_id" : "tx-1", "card_id":"c-42", "merchant_id":"m-7", "amount" :1.5,'
        b' "currency":"EUR", "event_time":"2026-11-23T10:00:00.123Z"}',
    ],
)
def test_records_naming_each_key_once_are_accepted(value: bytes) -> None:
    out = _decoder(_Clock(NOW_MS)).decode(_records([(b"c-42", value)]))
    assert out.dead == [] and len(out.txns) == 1


def test_event_times_near_the_epoch_are_accepted() -> None:
    out = _times(_decoder(_Clock(NOW_MS)), [0, 1, 299_999, 300_000])
    assert out.dead == [] and len(out.txns) == 4


def test_record_far_ahead_of_the_wall_clock_is_rejected_even_when_its_kafka_timestamp_agrees() -> (
    None
):
    year_2099 = 4_070_908_800_000
    decoder = _decoder(_Clock(NOW_MS))
    out = decoder.decode(
        [RawRecord(TOPIC, 3, 100, b"c", _txn("tx-f", event_time=year_2099), year_2099)]
    )
    assert [_dead_letter(m).reason for m in out.dead] == ["timestamp"]
    # The following live records are neither dead letters nor late.
    live = _times(decoder, [NOW_MS - 1_000, NOW_MS - 500, NOW_MS])
    assert live.dead == [] and live.txns.late == [False, False, False]


def _quarantining_decoder() -> PartitionDecoder:
    """A transaction decoder whose offset 101 is quarantined."""
    return PartitionDecoder(
        DecodeConfig(dead_letter_topic=DEAD_TOPIC, max_message_bytes=LIMIT),
        source=f"{TOPIC}#3",
        kind="transaction",
        resume=None,
        dead_letters=DeadLetters(DEAD_TOPIC),
        wall_clock=lambda: NOW_MS,
        quarantined={101: "crashed step 'c0 cards' 2 times (ValueError: x); skipped"},
    )


def test_quarantined_offsets_become_dead_letters_and_nothing_else() -> None:
    decoder = _quarantining_decoder()
    out = decoder.decode(_records([(b"c", _txn(f"tx-{i}")) for i in range(3)]))
    assert [r.offset for r in out.txns.raw] == [100, 102]
    (dl,) = [_dead_letter(m) for m in out.dead]
    assert (dl.reason, dl.offset) == ("quarantined", 101) and "crashed step" in dl.error


def test_a_quarantined_record_is_never_read(monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[bytes | None] = []

    def spy(values: list[bytes | None], limit: int) -> list[Any]:
        read.extend(values)
        return fast_transactions(values, limit)

    monkeypatch.setattr(decode, "fast_transactions", spy)
    monkeypatch.setattr(decode, "fast_transaction_columns", spy)
    decoder = _quarantining_decoder()
    out = decoder.decode(_records([(b"c", _txn(f"tx-{i}")) for i in range(3)]))
    assert [r.offset for r in out.txns.raw] == [100, 102]
    assert read == [_txn("tx-0"), None, _txn("tx-2")]


@pytest.mark.parametrize("path", ["msgspec", "pydantic"])
def test_a_decoding_bug_is_a_quarantined_dead_letter_not_a_crash(
    monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    def broken(*_args: object) -> Transaction:
        raise RuntimeError("bug")

    monkeypatch.setattr(decode, "fast_transaction_columns", broken)  # the batch path
    if path == "msgspec":
        monkeypatch.setattr(decode, "fast_transactions", broken)
    else:
        monkeypatch.setattr(
            decode, "fast_transactions", lambda values, _limit: [None] * len(values)
        )
        monkeypatch.setattr(Transaction, "model_validate_json", broken)
    dl, _ = _decode_one(_txn("tx-1"))
    assert dl.reason == "quarantined" and "RuntimeError: bug" in dl.error
