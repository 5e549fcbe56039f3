"""The decoder's fast path: msgspec reads the common records, pydantic decides the rest.

pydantic (:mod:`schemas.records`) is the authority on the contract. This
module only answers, for one raw value, "pydantic would accept this record, and
these are its values", or ``None`` ("ask pydantic"). It answers only
for values where the two parsers cannot disagree:

- ASCII bytes with no backslash: no escapes, surrogates, invalid UTF-8 or
  BOM; every ``"`` opens or closes a string, and a string's length in code
  points is its length in bytes;
- every key is a contract field (msgspec forbids the others) named once: the
  value holds two quotes per key and per string value, and no more;
- every value has the contract's JSON type and bounds, checked by msgspec with
  the same limits as the pydantic field (``amount`` a finite number, read as a
  float as pydantic's strict float reads an integer; identifiers 1 to 128
  characters; ``currency`` three capitals, its length checked by msgspec and
  its letters by one match over the batch's currencies; optional text a string
  of at most 128 characters or ``null``);
- ``event_time`` is a string or an integer that
  :func:`schemas.timefmt.parse_event_time`, the function pydantic's own
  validator calls, accepts (a batch's times are read together by
  :func:`schemas.timefmt.parse_event_times`, which returns what it returns).

Any other value (whatever msgspec rejects, too) goes to pydantic, which gives
the verdict and its error text. A transaction is answered as the values the
decoder's columns keep (:func:`operators.messages.txn_row` of the instance
pydantic would build), and no instance is built. A chargeback is built as
validation leaves one: the same ``__dict__`` (every field, defaults included,
in field order), fields set, and no extras or private attributes (pydantic's
four instance slots, set as ``model_construct`` sets them, without its
per-field work). ``tests/unit/operators/test_decode_fast.py`` holds both paths
to one verdict and the same values.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import repeat
from operator import eq
from typing import Annotated, Final, TypeVar

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType
from msgspec.structs import astuple

from operators.internals import rebuild_model
from operators.messages import TxnRow, TxnRowColumns
from schemas.records import Chargeback
from schemas.timefmt import parse_event_time, parse_event_times

_Identifier = Annotated[str, Meta(min_length=1, max_length=128)]
_OptionalText = Annotated[str, Meta(max_length=128)] | None | UnsetType
# Three ASCII capitals (pydantic's ``^[A-Z]{3}$``, matched whole): msgspec checks the
# length and _CAPITALS the letters, once over the batch (a pattern checked by msgspec
# per value is nearly half of its time).
_Currency = Annotated[str, Meta(min_length=3, max_length=3)]
_CAPITALS: Final = re.compile("[A-Z]*")
# msgspec reads a JSON integer into a float field as a float, as pydantic's strict float does.
_Amount = Annotated[float, Meta(ge=0, le=1e9)]


# gc=False: its fields are strings and numbers, never part of a cycle, so the collector
# need not track (and walk) a batch's thousand instances.
class _Txn(Struct, forbid_unknown_fields=True, gc=False):
    event_id: _Identifier
    card_id: _Identifier
    merchant_id: _Identifier
    amount: _Amount
    currency: _Currency
    event_time: int | str
    country: _OptionalText = UNSET
    channel: _OptionalText = UNSET
    device_id: _OptionalText = UNSET


class _Cb(Struct, forbid_unknown_fields=True):
    event_id: _Identifier
    txn_event_id: _Identifier
    merchant_id: _Identifier
    event_time: int | str
    card_id: _OptionalText = UNSET


_TXN_DECODER: Final = msgspec.json.Decoder(_Txn)
# A transaction's fields, one getter each (a column is one map); and a valid
# transaction that stands in for a value the fast path declined, so the batch's
# columns keep their length.
_STAND_IN: Final = _TXN_DECODER.decode(
    b'{"event_id":"-","card_id":"-","merchant_id":"-","amount":0,"currency":"AAA",'
    b'"event_time":"1970-01-01T00:00:00.000Z"}'
)
_CB_DECODER: Final = msgspec.json.Decoder(_Cb)
_CB_REQUIRED: Final = frozenset(("event_id", "txn_event_id", "merchant_id", "event_time"))
_S = TypeVar("_S", _Txn, _Cb)
# Quotes an optional text field adds to a value: its key's two and, when it is a
# string, the string's two.
_OPTIONAL_QUOTES: Final = {str: 4, type(None): 2, type(UNSET): 0}
# Quotes of the required fields of a transaction: six keys, and the ids and currency.
_TXN_QUOTES: Final = 2 * (6 + 4)


def fast_transaction(value: bytes) -> TxnRow | None:
    """The column values of the :class:`Transaction` pydantic would build; None: ask pydantic."""
    return fast_transactions([value], len(value))[0]


def fast_transactions(values: Sequence[bytes | None], limit: int) -> list[TxnRow | None]:
    """:func:`fast_transaction` of each value of a batch; None also for one over ``limit`` bytes."""
    return txn_rows(*fast_transaction_columns(values, limit))


def txn_rows(columns: TxnRowColumns, declined: list[int]) -> list[TxnRow | None]:
    """The rows of :func:`fast_transaction_columns`' columns, None where it declined."""
    rows: list[TxnRow | None] = list(zip(*columns, strict=True))
    for i in declined:
        rows[i] = None
    return rows


def fast_transaction_columns(
    values: Sequence[bytes | None], limit: int
) -> tuple[TxnRowColumns, list[int]]:
    """:func:`fast_transactions` of a batch as columns, and the positions it declined.

    A declined value's place in the columns holds a stand-in. msgspec reads
    the values one by one; every other check and conversion runs over whole
    columns: a batch of plain, valid values costs no Python code per value.
    """
    n = len(values)
    if not n:
        return ([], [], [], [], [], [], []), []
    joined = _joined_if_plain(values, limit)
    if joined is not None:
        try:
            read: list[_Txn | None] = list(map(_TXN_DECODER.decode, values))  # type: ignore[arg-type]
        except msgspec.DecodeError:
            read = _read_each(values, _TXN_DECODER)
    else:
        plain = [v if v is not None and len(v) <= limit and _is_plain(v) else None for v in values]
        read = _read_each(plain, _TXN_DECODER)
    declined = {i for i, r in enumerate(read) if r is None} if None in read else set()
    txns = [_STAND_IN if r is None else r for r in read] if declined else read
    # Transposed in C (no None is left): a tuple a value, its fields in declaration order.
    ids, cards, merchants, amounts, currencies, times, countries, channels, devices = map(
        list,
        zip(*map(astuple, txns), strict=True),  # type: ignore[arg-type]
    )
    # Two quotes per key and per string value, and no more: else a key is named twice.
    # No value has fewer than its fields make, so a batch with as many as they all make
    # has no value with more.
    expected = _TXN_QUOTES * n + 2 * sum(map(isinstance, times, repeat(str)))
    for texts in (countries, channels, devices):
        absent, null = texts.count(UNSET), texts.count(None)
        expected += 4 * (n - absent) - 2 * null  # a key's quotes, and a string's
    if joined is None or declined or joined.count(b'"') != expected:
        for i, value in enumerate(values):
            own = (
                _TXN_QUOTES
                + _OPTIONAL_QUOTES[type(countries[i])]
                + _OPTIONAL_QUOTES[type(channels[i])]
                + _OPTIONAL_QUOTES[type(devices[i])]
                + (2 if isinstance(times[i], str) else 0)
            )
            if i not in declined and value is not None and value.count(b'"') != own:
                declined.add(i)
    if not _CAPITALS.fullmatch("".join(currencies)):
        declined.update(i for i, c in enumerate(currencies) if not _CAPITALS.fullmatch(c))
    ms = parse_event_times(times)
    if None in ms:
        declined.update(i for i, t in enumerate(ms) if t is None)
    ecom = list(map(eq, channels, repeat("ecom")))
    has_device = list(map(isinstance, devices, repeat(str)))
    columns = (ids, cards, merchants, ms, amounts, ecom, has_device)
    return columns, sorted(declined)  # type: ignore[return-value]


def _read_each(
    values: Sequence[bytes | None], decoder: msgspec.json.Decoder[_S]
) -> list[_S | None]:
    """Each value read by ``decoder``; None where it is None or msgspec rejects it."""
    out: list[_S | None] = []
    for value in values:
        try:
            out.append(None if value is None else decoder.decode(value))
        except msgspec.DecodeError:
            out.append(None)
    return out


def fast_chargebacks(values: Sequence[bytes | None], limit: int) -> list[Chargeback | None]:
    """:func:`fast_chargeback` of each value of a batch; None also for one over ``limit`` bytes."""
    return [
        None if value is None or len(value) > limit else fast_chargeback(value) for value in values
    ]


def fast_chargeback(value: bytes) -> Chargeback | None:
    """The :class:`Chargeback` pydantic would build from ``value``; None: ask pydantic."""
    r = _plain(value, _CB_DECODER)
    if r is None:
        return None
    card_id = r.card_id
    fields_set = set(_CB_REQUIRED)
    strings = 3  # string values besides event_time: the ids
    if card_id is UNSET:
        card_id = None
    else:
        fields_set.add("card_id")
        strings += card_id is not None
    ms = _event_ms(value, r.event_time, len(fields_set), strings)
    if ms is None:
        return None
    values = {
        "event_id": r.event_id,
        "txn_event_id": r.txn_event_id,
        "merchant_id": r.merchant_id,
        "card_id": card_id,
        "event_time": ms,
    }
    return rebuild_model(Chargeback, values, fields_set)


def _joined_if_plain(values: Sequence[bytes | None], limit: int) -> bytes | None:
    """The values joined when every one is present, plain and within ``limit`` bytes (one
    look at the whole batch, which spares each value its own); else None."""
    try:
        joined = b"".join(values)  # type: ignore[arg-type]
    except TypeError:  # a value missing
        return None
    if _is_plain(joined) and max(map(len, values)) <= limit:  # type: ignore[arg-type]
        return joined
    return None


def _is_plain(value: bytes) -> bool:
    """ASCII without a backslash: no escapes, and every quote opens or closes a string."""
    return value.isascii() and b"\\" not in value


def _plain(value: bytes, decoder: msgspec.json.Decoder[_S]) -> _S | None:
    """``value`` read by ``decoder`` when it is plain ASCII without escapes; else None."""
    if not _is_plain(value):
        return None
    try:
        return decoder.decode(value)
    except msgspec.DecodeError:
        return None


def _event_ms(value: bytes, event_time: int | str, keys: int, strings: int) -> int | None:
    """``event_time`` in ms when ``value`` names each of its ``keys`` once; else None.

    ``strings`` counts the string values other than ``event_time``: the value
    holds two quotes per key and per string value, and no more unless a key is
    named twice.
    """
    strings += isinstance(event_time, str)
    if value.count(b'"') != 2 * (keys + strings):
        return None  # a key named twice
    try:
        return parse_event_time(event_time)
    except ValueError:
        return None
