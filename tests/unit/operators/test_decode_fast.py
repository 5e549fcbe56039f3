"""The msgspec fast path against pydantic alone: the same verdict for every input.

The verdict of a value is what the decoder keeps of the record pydantic
builds, or the dead letter's reason and error text, or the exception decoding
raises. A transaction is kept as the values of its row in the batch's columns
(each with its Python type: :func:`operators.messages.txn_row` of pydantic's
instance on the slow path); a chargeback as its instance (its type, every
field value with its Python type, its fields set, no extras). The decoder's verdict
(fast path first, pydantic when it declines) must equal :func:`validate`'s,
which asks pydantic alone, for hand-picked edge cases, for generated records
(hypothesis), and for a seeded corpus of valid, mutated and random records.
Separate checks make sure the fast path really takes the common records, so
the comparison is not vacuous.
"""

from __future__ import annotations

import json
import random
from dataclasses import fields
from typing import Any

import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from pydantic.fields import FieldInfo

from models.simulator import SimConfig, simulate
from operators.decode import DeadLetters, DecodeConfig, Kind, PartitionDecoder
from operators.decode_fast import (
    _CAPITALS,
    _Cb,
    _Txn,
    fast_chargeback,
    fast_transaction,
    fast_transactions,
)
from operators.messages import RawRecord, TxnColumns, TxnRow, txn_row
from schemas.records import Chargeback, DeadLetter, Transaction
from schemas.timefmt import MAX_MS, format_ms, parse_event_time

LIMIT = 100_000
MODELS: dict[Kind, type[Transaction] | type[Chargeback]] = {
    "transaction": Transaction,
    "chargeback": Chargeback,
}


def _decoder(kind: Kind, *, fast: bool) -> PartitionDecoder:
    decoder = PartitionDecoder(
        DecodeConfig(dead_letter_topic="dead", max_message_bytes=LIMIT),
        source="in#0",
        kind=kind,
        resume=None,
        dead_letters=DeadLetters("dead"),
        wall_clock=None,
    )
    if not fast:
        # Every value to pydantic, as before the fast path.
        decoder._fast = lambda values, _limit: [None] * len(values)
        decoder._fast_columns = None
    return decoder


def _verdict(kind: Kind, value: bytes, *, fast: bool) -> tuple[Any, ...]:
    """What decoding ``value`` as the first record of a partition gives: the record (with
    each value's type, so 0, 0.0 and -0.0 differ), or the dead letter's reason and error."""
    # A Kafka timestamp at the end of time: no event time is judged to be in the future.
    out = _decoder(kind, fast=fast).decode([RawRecord("t", 0, 0, None, value, MAX_MS)])
    if out.dead:
        (msg,) = out.dead
        letter = DeadLetter.model_validate_json(msg.value)
        return ("dead", letter.reason, letter.error)
    if out.txns:
        assert len(out.txns) == 1 and not out.chargebacks
        return ("record", "Transaction", _row_values(out.txns))
    (record,) = [env.cb for env in out.chargebacks]
    assert type(record.__pydantic_fields_set__) is set
    return (
        "record",
        type(record).__name__,
        tuple((k, type(v).__name__, repr(v)) for k, v in record.__dict__.items()),
        sorted(record.__pydantic_fields_set__),
        record.__pydantic_extra__,
        record.__pydantic_private__,
    )


def _row_values(txns: TxnColumns) -> tuple[tuple[str, str, str], ...]:
    """Each column's value in the only row of ``txns``, with its type (the raw record aside)."""
    names = [f.name for f in fields(TxnColumns) if f.name != "raw"]
    values = [(name, getattr(txns, name)) for name in names]
    assert all(len(column) == 1 for _, column in values)
    return tuple((name, type(column[0]).__name__, repr(column[0])) for name, column in values)


def assert_same_verdict(kind: Kind, value: bytes) -> tuple[Any, ...]:
    """The decoder's verdict on ``value`` equals pydantic's alone; returns it."""
    got = _verdict(kind, value, fast=True)
    assert got == _verdict(kind, value, fast=False), value
    return got


def _fast(kind: Kind, value: bytes) -> TxnRow | Chargeback | None:
    return fast_transaction(value) if kind == "transaction" else fast_chargeback(value)


def _txn(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "event_id": "tx-1",
        "card_id": "c-1",
        "merchant_id": "m-1",
        "amount": 12.5,
        "currency": "EUR",
        "event_time": "2026-11-23T10:00:00.123Z",
        "country": "DE",
        "channel": "web",
        "device_id": "d-1",
    }
    data.update(changes)
    return data


def _cb(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "event_id": "cb-1",
        "txn_event_id": "tx-1",
        "merchant_id": "m-1",
        "card_id": "c-1",
        "event_time": 1_795_428_000_123,
    }
    data.update(changes)
    return data


def _raw(pairs: list[tuple[str, str]], colon: str = ":", comma: str = ",") -> bytes:
    """An object from (key, JSON text of the value) pairs, exactly as written."""
    return ("{" + comma.join(f"{json.dumps(k)}{colon}{v}" for k, v in pairs) + "}").encode()


def _with(base: dict[str, Any], **raw_values: str) -> bytes:
    """``base`` with some values written as raw JSON text (numbers as typed, literals)."""
    pairs = [(k, raw_values.pop(k, json.dumps(v))) for k, v in base.items()]
    pairs += list(raw_values.items())
    return _raw(pairs)


# -- the msgspec types mirror the pydantic models ---------------------------------------


def _pydantic_field(field: FieldInfo) -> tuple[bool, dict[str, Any]]:
    limits: dict[str, Any] = {}
    for meta in field.metadata:
        for name in ("min_length", "max_length", "ge", "le", "pattern"):
            if getattr(meta, name, None) is not None:
                limits[name] = getattr(meta, name)
        if getattr(meta, "func", None) is parse_event_time:
            limits["parsed by"] = "parse_event_time"
    if limits.get("pattern") == "^[A-Z]{3}$":
        limits["pattern"] = r"\A[A-Z]{3}\Z"  # the same match in Python's re
    return field.is_required(), limits


def _msgspec_field(field: mi.Field) -> tuple[bool, dict[str, Any]]:
    types = field.type.types if isinstance(field.type, mi.UnionType) else (field.type,)
    limits: dict[str, Any] = {}
    for t in types:
        for name in ("min_length", "max_length", "ge", "le", "pattern"):
            if getattr(t, name, None) is not None:
                limits[name] = getattr(t, name)
    if {type(t) for t in types} == {mi.IntType, mi.StrType}:
        limits["parsed by"] = "parse_event_time"  # what fast_* call on the value
    if field.name == "currency":  # msgspec checks the length, fast_transactions the letters
        assert limits == {"min_length": 3, "max_length": 3}
        assert _CAPITALS.pattern == "[A-Z]*"  # matched whole
        limits = {"pattern": r"\A[A-Z]{3}\Z"}
    return field.required, limits


@pytest.mark.parametrize(("model", "struct"), [(Transaction, _Txn), (Chargeback, _Cb)])
def test_the_msgspec_types_have_the_models_fields_and_limits(model: Any, struct: Any) -> None:
    info = mi.type_info(struct)
    assert isinstance(info, mi.StructType) and info.forbid_unknown_fields
    mirror = {f.name: _msgspec_field(f) for f in info.fields}
    assert mirror == {name: _pydantic_field(f) for name, f in model.model_fields.items()}
    assert all(f.default is None for f in model.model_fields.values() if not f.is_required())


# -- the fast path takes the common records -------------------------------------------


def test_simulated_records_take_the_fast_path_and_equal_pydantics() -> None:
    config = SimConfig(seed=5, cards=300, events_per_second=2.0, fraud_share=0.1)
    values = [
        (e.kind, json.dumps(e.payload, separators=(",", ":")).encode())
        for e in simulate(config, 3_000)
    ]
    assert {kind for kind, _ in values} == {"transaction", "chargeback"}
    for kind, value in values:
        assert _fast(kind, value) is not None, value
        assert assert_same_verdict(kind, value)[0] == "record"


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("transaction", json.dumps(_txn()).encode()),  # ", " and ": " separators
        ("transaction", json.dumps({k: v for k, v in _txn().items() if k != "country"}).encode()),
        ("transaction", json.dumps(_txn(country=None, channel=None)).encode()),
        ("transaction", json.dumps(_txn(channel="ecom", device_id=None)).encode()),
        ("transaction", json.dumps(_txn(channel="Ecom")).encode()),
        ("transaction", json.dumps(_txn(event_time=0)).encode()),
        ("transaction", json.dumps(_txn(event_time=MAX_MS)).encode()),
        ("transaction", json.dumps(_txn(event_time="2026-11-23T11:00:00+01:00")).encode()),
        ("transaction", _with(_txn(), amount="10")),  # an integer amount is read as a float
        ("transaction", _with(_txn(), amount="-0")),
        ("transaction", _with(_txn(), amount="-0.0")),
        ("transaction", _with(_txn(), amount="1e9")),
        ("transaction", _with(_txn(), amount="999999999.99999999999")),
        ("transaction", json.dumps(_txn(event_id="x" * 128)).encode()),
        ("transaction", b"\n " + json.dumps(_txn()).encode() + b"\r\n\t"),
        ("transaction", json.dumps(dict(reversed(_txn().items()))).encode()),
        ("chargeback", json.dumps(_cb()).encode()),
        ("chargeback", json.dumps({k: v for k, v in _cb().items() if k != "card_id"}).encode()),
        ("chargeback", json.dumps(_cb(card_id=None)).encode()),
    ],
)
def test_the_fast_path_takes_plain_records(kind: Kind, value: bytes) -> None:
    fast = _fast(kind, value)
    assert fast is not None
    verdict = assert_same_verdict(kind, value)
    assert verdict[0] == "record"
    if isinstance(fast, tuple):  # a transaction: the values its row keeps, typed as pydantic's
        assert fast == txn_row(Transaction.model_validate_json(value))
        assert [type(v) for v in fast] == [str, str, str, int, float, bool, bool]
    else:  # key order of the input does not matter: the instance lists fields in model order
        assert list(fast.__dict__) == list(MODELS[kind].model_fields)


# -- hand-picked inputs where msgspec and pydantic could disagree -----------------------

# Amounts and event times as written: strict float, bounds, huge, not finite, not JSON.
_EDGE_AMOUNTS = [
    "true", "null", '"1"', "-1", "-1e-320", "1000000000", "1000000001",
    "1000000000.0000001", "1e400", "-1e400", "NaN", "Infinity", "-Infinity",
    str(2**64), str(10**400), "0.1000000000000000055511151231257827021181583404541015625",
    "1.", ".5", "01", "1E2", "1e+2", "[]", "{}",
]  # fmt: skip
_EDGE_TIMES = [
    "-1", "0", str(MAX_MS), str(MAX_MS + 1), str(2**63), str(2**64), str(2**70),
    "1.0", "1e3", "true", "null", '""', '"x"', '"2026-11-23T10:00:00"',
    '"2026-11-23T10:00:00.123z"', '"2026-11-23t10:00:00Z"', '"2026-02-30T10:00:00Z"',
    '"2026-11-23T24:00:00Z"', '"2026-11-23T23:59:60Z"', '"2026-11-23T10:00:00.1234567891Z"',
    '"2026-11-23T10:00:00.123456789Z"', '"2026-11-23 10:00:00Z"', '"0001-01-01T00:00:00Z"',
    '"9999-12-31T23:59:59.999Z"', '"9999-12-31T23:59:59-01:00"', '"1970-01-01T00:00:00+00:01"',
    '"1969-12-31T23:59:59.999Z"', '"2026-11-23T10:00:00+2400"', '"2026-11-23T10:00Z"',
    '"2026-11-23T10:00:00.Z"', '" 2026-11-23T10:00:00Z"', '"2026-11-23T10:00:00Z "',
    '"0001-01-01T00:00:00+01:00"',
]  # fmt: skip

EDGE_TXNS: list[bytes] = [
    # numbers: strict float, bounds, huge, not finite, not JSON
    *(_with(_txn(), amount=a) for a in _EDGE_AMOUNTS),
    # event_time: integers at and over the bounds, floats, bools, strings of every shape
    *(_with(_txn(), event_time=t) for t in _EDGE_TIMES),
    # strings: lengths, currency shapes, escapes, control characters, non-ASCII
    *(json.dumps(_txn(event_id=s)).encode() for s in ["", "x" * 129, "é" * 128, "é" * 129]),
    *(json.dumps(_txn(event_id=s), ensure_ascii=False).encode() for s in ["é" * 128, "😀" * 65]),
    *(
        json.dumps(_txn(currency=c)).encode()
        for c in ["USD\n", "usd", "US", "USDD", "ÉUR", "U$D", "\nUSD", "US\u0000", ""]
    ),
    json.dumps(_txn(country="x" * 128, channel="x" * 129)).encode(),
    json.dumps(_txn(card_id='a":b', merchant_id=":", channel=": ")).encode(),
    json.dumps(_txn(event_id="\ud800")).encode(),
    json.dumps(_txn(event_id="\udc00\ud800")).encode(),
    json.dumps(_txn(event_id="\x00\u2028\x7f")).encode(),
    _with(_txn(), event_id='"tx\x01"'),
    _with(_txn(), event_id='"tx\t"'),
    _with(_txn(), event_id='"tx\x7f"'),
    _with(_txn(), event_id='"tx-\xc3\xa9"'.encode("latin-1").decode("utf-8")),
    json.dumps(_txn(event_id=1, card_id=None)).encode(),
    json.dumps(_txn(device_id=1)).encode(),
    json.dumps(_txn(device_id=[])).encode(),
    # keys: unknown, repeated (with the same, another, or a bad value), escaped, spaced
    json.dumps(_txn(note="x")).encode(),
    json.dumps(_txn(extra={"amount": 1, "x": [1, {"y": None}]})).encode(),
    _raw([(k, json.dumps(v)) for k, v in _txn().items()] + [("amount", "2")]),
    _raw([(k, json.dumps(v)) for k, v in _txn().items()] + [("amount", "-1")]),
    _raw([("amount", "-1"), *[(k, json.dumps(v)) for k, v in _txn().items()]]),
    _raw([(k, json.dumps(v)) for k, v in _txn().items()] + [("event_id", '"tx-2"')]),
    _raw([(k, json.dumps(v)) for k, v in _txn().items()] + [("country", "null")]),
    _raw([(k, json.dumps(v)) for k, v in _txn().items()] + [("event_time", "1")]),
    _raw([(k, json.dumps(v)) for k, v in _txn(event_time=1).items()] + [("event_time", '"x"')]),
    _raw([(k, json.dumps(v)) for k, v in _txn().items()], colon=" : "),
    _raw([(k, json.dumps(v)) for k, v in _txn().items()], colon="\t:", comma=",\n"),
    _raw([(k, json.dumps(v)) for k, v in _txn().items()] + [("amount", "2")], colon=" :"),
    json.dumps(_txn()).encode().replace(b'"amount"', b'"amoun\\u0074"'),
    json.dumps(_txn()).encode()[:-1] + b', "amoun\\u0074": 2}',
    # framing: BOM, odd white space, trailing bytes, not an object, not JSON, empty
    b"\xef\xbb\xbf" + json.dumps(_txn()).encode(),
    b"\x0c" + json.dumps(_txn()).encode(),
    json.dumps(_txn()).encode() + b"\x00",
    json.dumps(_txn()).encode() + b"\xc2\xa0",
    json.dumps(_txn()).encode() + b" x",
    json.dumps(_txn()).encode() + b"{}",
    json.dumps(_txn()).encode()[:-1] + b",}",
    json.dumps(_txn()).encode()[:-1],
    json.dumps([_txn()]).encode(),
    b"{}",
    b"[]",
    b"null",
    b"",
    b"   ",
    b"\xff\xfe",
    json.dumps(_txn()).encode().replace(b"DE", b"D\xff"),
]


@pytest.mark.parametrize("value", EDGE_TXNS)
def test_edge_transactions_get_pydantics_verdict(value: bytes) -> None:
    assert_same_verdict("transaction", value)


@pytest.mark.parametrize(
    "value",
    [
        json.dumps(_cb(card_id="x" * 129)).encode(),
        json.dumps(_cb(txn_event_id="")).encode(),
        json.dumps(_cb(event_time="2026-11-23T10:00:00")).encode(),
        json.dumps(_cb(event_time=-1)).encode(),
        json.dumps(_cb(amount=1)).encode(),
        _raw([(k, json.dumps(v)) for k, v in _cb().items()] + [("card_id", "null")]),
        _raw([(k, json.dumps(v)) for k, v in _cb().items()] + [("event_id", '"cb-2"')]),
        json.dumps(_txn()).encode(),
    ],
)
def test_edge_chargebacks_get_pydantics_verdict(value: bytes) -> None:
    assert_same_verdict("chargeback", value)


def test_a_key_named_twice_stays_a_json_dead_letter_with_its_name() -> None:
    value = _raw([(k, json.dumps(v)) for k, v in _txn().items()] + [("channel", '"pos"')])
    assert _fast("transaction", value) is None
    assert assert_same_verdict("transaction", value) == (
        "dead",
        "json",
        "duplicate key 'channel': a record names each field once",
    )


# -- generated records -----------------------------------------------------------------

_EDGE_TEXT = [
    "", "a", "x" * 127, "x" * 128, "x" * 129, "é" * 128, "USD", "EUR", "usd", "USD\n",
    "\nUSD", "US", ":", 'a":b', "a\\b", "\ud800", "\x00", "\u2028", "\ufeff", "٣٣٣",
    "2026-11-23T10:00:00.123Z", "2026-11-23T10:00:00Z", "2026-11-23T10:00:00+05:30",
    "2026-11-23t10:00:00.5z", "2026-11-23T10:00:00", "2026-13-01T00:00:00Z",
    "\uff11\uff19\uff17\uff10-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z",
    "1970-01-01T00:00:00-00:01",
]  # fmt: skip
_RAW_NUMBERS = [
    "-0", "-0.0", "0", "1e9", "1E9", "1000000000", "1000000001", "1e400", "NaN", "Infinity",
    "1.", ".5", "01", "1e-400", "999999999.99999999999", "1000000000.0000001",
    str(2**63), str(2**64), str(-(2**63) - 1), str(MAX_MS), str(MAX_MS + 1),
]  # fmt: skip


def _text(max_size: int) -> st.SearchStrategy[str]:
    """Text of printable ASCII (what the fast path reads), or of any code point."""
    printable = st.characters(min_codepoint=32, max_codepoint=126)
    return st.one_of(
        st.text(printable, max_size=max_size),
        st.text(printable, max_size=max_size),
        st.text(max_size=max_size),
        st.builds(lambda c, n: c * n, printable, st.integers(120, 130)),
        st.sampled_from(_EDGE_TEXT),
    )


_RFC3339 = st.builds(
    "{:04d}-{:02d}-{:02d}{}{:02d}:{:02d}:{:02d}{}{}".format,
    st.sampled_from([1969, 1970, 2026, 2100, 9999]) | st.integers(0, 9999),
    st.integers(0, 13),
    st.integers(0, 32),
    st.sampled_from(["T", "T", "t", " "]),
    st.integers(0, 24),
    st.integers(0, 60),
    st.integers(0, 61),
    st.sampled_from(["", ".", ".1", ".123", ".123456", ".123456789", ".1234567891", ".12a"]),
    st.sampled_from(["Z", "Z", "z", "", "+00:00", "-01:30", "+23:59", "+24:00", "+0100", "Z "]),
)

# JSON text of values each field may meet: of its type and near its bounds, or not.
_PLAUSIBLE: dict[str, st.SearchStrategy[str]] = {
    "amount": st.one_of(
        st.floats(min_value=-1.0, max_value=1.1e9).map(repr),
        st.integers(-1, 10**9 + 1).map(str),
        st.sampled_from(_RAW_NUMBERS),
    ),
    "currency": st.text(st.sampled_from("AEUZaz\n\u00c9"), min_size=2, max_size=4).map(json.dumps),
    "event_time": st.one_of(
        st.integers(-1, MAX_MS + 1).map(str),
        _RFC3339.map(json.dumps),
        st.sampled_from(_RAW_NUMBERS),
    ),
}
_IDENTIFIER = st.builds(json.dumps, _text(8) | st.none())


def _json_values(field: str) -> st.SearchStrategy[str]:
    """JSON text of a value for ``field``: plausible for it, or of any type at all."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        _text(8),
    )
    anything = st.one_of(
        st.builds(lambda v, a: json.dumps(v, ensure_ascii=a), scalars, st.booleans()),
        st.sampled_from(_RAW_NUMBERS),
        st.builds(
            json.dumps,
            st.recursive(scalars, lambda c: st.lists(c, max_size=2) | st.dictionaries(
                st.text(max_size=3), c, max_size=2), max_leaves=4),
        ),
    )  # fmt: skip
    plausible = _PLAUSIBLE.get(field, _IDENTIFIER)
    return st.one_of(plausible, plausible, anything)


_SPACE = st.sampled_from(["", "", "", "", "", " ", " ", "\t", "\n", "\r\n", "\x0c"])


@st.composite
def documents(draw: st.DrawFn, kind: Kind) -> bytes:
    """An object close to a record: some values changed to near or across their bounds or
    to other types, keys dropped, repeated or unknown ones added, in any order, with any
    white space around the tokens; sometimes cut, framed or with one byte changed."""
    base = _txn() if kind == "transaction" else _cb()
    pairs = [(k, json.dumps(v)) for k, v in base.items()]
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2, 2, 3]))):
        op = draw(st.sampled_from(["change", "change", "change", "drop", "add", "shuffle"]))
        if op == "change":
            i = draw(st.integers(0, len(pairs) - 1)) if pairs else 0
            if pairs:
                pairs[i] = (pairs[i][0], draw(_json_values(pairs[i][0])))
        elif op == "drop" and pairs:
            del pairs[draw(st.integers(0, len(pairs) - 1))]
        elif op == "add":
            key = draw(st.sampled_from([*base, "note", "Amount", "amount ", ""]))
            pairs.insert(draw(st.integers(0, len(pairs))), (key, draw(_json_values(key))))
        elif op == "shuffle":
            pairs = draw(st.permutations(pairs))
    colon = draw(_SPACE) + ":" + draw(_SPACE)
    comma = draw(_SPACE) + "," + draw(_SPACE)
    text = draw(_SPACE) + "{" + comma.join(
        f"{json.dumps(k, ensure_ascii=draw(st.booleans()))}{colon}{v}" for k, v in pairs
    ) + "}" + draw(_SPACE)  # fmt: skip
    value = text.encode("utf-8", "surrogatepass")
    how = draw(st.sampled_from(["as is"] * 7 + ["byte", "cut", "framed"]))
    if how == "byte" and value:
        i = draw(st.integers(0, len(value) - 1))
        value = value[:i] + bytes([draw(st.integers(0, 255))]) + value[i + 1 :]
    elif how == "cut":
        value = value[: draw(st.integers(0, len(value)))]
    elif how == "framed":
        value = draw(st.sampled_from([b"\xef\xbb\xbf", b"[", b""])) + value
        value += draw(st.sampled_from([b"]", b"\x00", b" x", b"{}", b""]))
    return value


DIFFERENTIAL = settings(
    max_examples=600,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@DIFFERENTIAL
@given(st.data())
def test_generated_transactions_get_pydantics_verdict(data: st.DataObject) -> None:
    value = data.draw(documents("transaction"))
    note(repr(value))
    assert_same_verdict("transaction", value)
    event("fast path" if _fast("transaction", value) else "pydantic")


@DIFFERENTIAL
@given(st.data())
def test_generated_chargebacks_get_pydantics_verdict(data: st.DataObject) -> None:
    value = data.draw(documents("chargeback"))
    note(repr(value))
    assert_same_verdict("chargeback", value)
    event("fast path" if _fast("chargeback", value) else "pydantic")


@settings(DIFFERENTIAL, max_examples=1_000)
@given(
    st.floats(min_value=0.0, max_value=1e9) | st.integers(0, 10**9),
    st.sampled_from(["{}", "{:.17g}", "{:.25g}", "{:e}", "{:.30f}"]),
)
def test_amounts_read_the_same_to_the_last_bit(amount: float, style: str) -> None:
    written = repr(amount) if style == "{}" else style.format(amount)
    value = _with(_txn(), amount=written)
    assert _fast("transaction", value) is not None
    assert assert_same_verdict("transaction", value)[0] == "record"


# -- a seeded corpus -------------------------------------------------------------------


def _corpus(rng: random.Random, n: int) -> list[tuple[Kind, bytes]]:
    """Valid records, mutated ones, random JSON and random bytes, as the poison-input fuzz."""
    out: list[tuple[Kind, bytes]] = []
    pool: list[Any] = [
        None, True, -1, 0, 1e308, "", "x" * 200, [], {}, "\ud800", "NaN", 2**70, "USD\n",
        "é" * 100, 1.5, "2026-11-23T10:00:00", "1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
        MAX_MS, MAX_MS + 1, -(2**63), '\x00\u2028"\\',
    ]  # fmt: skip
    while len(out) < n:
        kind: Kind = "transaction" if rng.random() < 0.8 else "chargeback"
        body = _txn() if kind == "transaction" else _cb()
        body["event_id"] = f"e-{rng.randrange(10**9)}"
        body["event_time"] = rng.choice(
            [
                rng.randrange(MAX_MS),
                f"2026-11-23T10:{rng.randrange(60):02d}:{rng.randrange(60):02d}"
                f".{rng.randrange(1000):03d}Z",
            ]
        )
        if kind == "transaction":
            body["amount"] = rng.choice([round(rng.uniform(0, 5000), 2), rng.randrange(10**6)])
        roll = rng.random()
        if roll < 0.4:
            out.append((kind, json.dumps(body, separators=rng.choice([(",", ":"), None])).encode()))
            continue
        if roll < 0.8:
            field = rng.choice(sorted(body))
            choice = rng.randrange(4)
            if choice == 0:
                del body[field]
            elif choice == 1:
                body[field] = rng.choice(pool)
            elif choice == 2:
                text = json.dumps(body)
                extra = rng.choice(["1", '"x"', "null", json.dumps(body[field])])
                out.append((kind, (text[:-1] + f', "{field}": {extra}}}').encode()))
                continue
            else:
                body[rng.choice(["note", "x"])] = rng.choice(pool)
            text = json.dumps(body, ensure_ascii=rng.random() < 0.5)
            out.append((kind, text.encode("utf-8", "surrogatepass")))
            continue
        if roll < 0.9:
            value: Any = rng.choice([[], {}, 1, "s", None, [body], {"event_id": 1}])
            out.append((kind, json.dumps(value).encode()))
            continue
        out.append((kind, rng.choice([b"", rng.randbytes(rng.randrange(1, 300))])))
    return out


def test_a_seeded_corpus_gets_pydantics_verdict() -> None:
    corpus = _corpus(random.Random(23), 20_000)
    verdicts = [assert_same_verdict(kind, value)[0] for kind, value in corpus]
    # The corpus reaches records, dead letters of both sorts, and the fast path.
    assert {"record", "dead"} <= set(verdicts)
    fast = sum(_fast(kind, value) is not None for kind, value in corpus)
    assert fast > 0.3 * len(corpus)


# -- batches ---------------------------------------------------------------------------


def _batch_verdict(decoder: PartitionDecoder, records: list[RawRecord]) -> tuple[Any, ...]:
    """Everything a decoded batch holds, each value with its type; dead letters as bytes."""
    out = decoder.decode(records)
    columns = out.txns._columns()
    typed = [[(type(v).__name__, repr(v)) for v in column] for column in columns[:-1]]
    cbs = [
        (
            tuple((k, type(v).__name__, repr(v)) for k, v in env.cb.__dict__.items()),
            sorted(env.cb.__pydantic_fields_set__),
            env.raw.offset,
            env.watermark,
        )
        for env in out.chargebacks
    ]
    raws = [(r.offset, r.value, r.timestamp_ms) for r in out.txns.raw]
    dead = [(m.key, m.value, m.origin, m.position) for m in out.dead]
    return typed, raws, cbs, dead, out.watermark, out.broadcast, decoder.snapshot()


def _valid_txn(rng: random.Random, base_ms: int) -> bytes:
    """A transaction as producers write it, its event time near ``base_ms`` (or, now
    and then, two hours ahead); rarely, its currency is not three capitals, or it
    names a key twice."""
    ahead = 7_200_000 if rng.random() < 0.03 else 0
    body = _txn(
        currency=rng.choice(["EUR"] * 600 + ["eur", "E R", "EU"]),
        event_id=f"e-{rng.randrange(10**9)}",
        amount=round(rng.uniform(0, 5000), 2),
        channel=rng.choice(["ecom", "pos", None]),
        device_id=rng.choice(["d-1", None]),
        event_time=format_ms(base_ms + ahead + rng.randrange(-90_000, 30_000)),
    )
    if rng.random() < 0.2:
        del body["country"]
    value = json.dumps(body, separators=(",", ":")).encode()
    if rng.random() < 1 / 300:
        value = value[:-1] + rng.choice([b',"channel":"pos"}', b',"device_id":null}'])
    return value


def test_batches_get_the_verdicts_of_pydantic_record_by_record() -> None:
    # Batches of every size: mixed (poison among valid records), and all valid (the
    # batch path), with Kafka timestamps that make some records far future or late.
    rng = random.Random(29)
    corpus = _corpus(random.Random(31), 6_000)
    base = 1_795_428_000_000
    # Kafka timestamps: of the end of time (nothing is future), or of when it was sent.
    streams: list[tuple[Kind, list[bytes], list[bool]]] = [
        ("transaction", [v for k, v in corpus if k == "transaction"], [True, False]),
        ("chargeback", [v for k, v in corpus if k == "chargeback"], [True, False]),
        ("transaction", [_valid_txn(rng, base + i * 50) for i in range(6_000)], [False]),
    ]
    plain_batches = late = future = 0
    for kind, values, end_of_time in streams:
        fast, slow = _decoder(kind, fast=True), _decoder(kind, fast=False)
        offset = 0
        while offset < len(values):
            size = rng.choice([1, 2, 15, 16, 17, 100, 500])
            chunk = values[offset : offset + size]
            stamps = [MAX_MS if rng.choice(end_of_time) else base + offset * 50 for _ in chunk]
            records = [
                RawRecord("t", 0, offset + i, None, v, ts)
                for i, (v, ts) in enumerate(zip(chunk, stamps, strict=True))
            ]
            got = _batch_verdict(fast, records)
            assert got == _batch_verdict(slow, records), offset
            late += got[0][7].count(("bool", "True"))
            future += sum(b'"reason":"timestamp"' in value for _, value, _, _ in got[3])
            if kind == "transaction":
                read = fast_transactions(chunk, LIMIT)
                assert read == [fast_transaction(v) for v in chunk]
                plain_batches += len(chunk) >= 16 and None not in read
            offset += size
    # The batch path (and the bulk time parse) was taken; records were late, or far future.
    assert plain_batches > 20 and late > 100 and future > 100
