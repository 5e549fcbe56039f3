"""The envelopes that travel between operators: records as consumed and as produced.

Items in the dataflow are *batches* (lists) of these, not single records:
one bytewax item per Kafka poll keeps the engine's per-item cost off the hot path.
They are slotted but not frozen: several are built per event, and a frozen
dataclass sets each field through ``object.__setattr__``, several times the
cost of a plain assignment. Treat them as read-only all the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, TypeVar

import orjson

from operators.internals import rebuild_model
from schemas.records import Chargeback, Transaction

_T = TypeVar("_T")


def _positional_pickle(cls: type[_T]) -> type[_T]:
    """Pickle as ``cls(*values)``: items cross processes in a bytewax cluster.

    A positional constructor call is the cheapest way back to a slotted
    dataclass; the generic route sets fields one by one, by name.
    """
    names = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]

    def __reduce__(self: Any) -> tuple[type[_T], tuple[Any, ...]]:  # noqa: N807
        return cls, tuple(getattr(self, n) for n in names)

    cls.__reduce__ = __reduce__  # type: ignore[method-assign]
    return cls


@_positional_pickle
@dataclass(slots=True)
class RawRecord:
    """One Kafka message as consumed, with its source coordinates."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int

    @property
    def source(self) -> str:
        """The input partition's identity, ``topic#partition``."""
        return f"{self.topic}#{self.partition}"


@_positional_pickle
@dataclass(slots=True)
class TxnEnvelope:
    """A valid transaction, its raw record, and its partition's verdict on time."""

    txn: Transaction
    raw: RawRecord
    late: bool
    watermark: int  # the partition's watermark right after this record


@_positional_pickle
@dataclass(slots=True)
class CbEnvelope:
    """A valid chargeback and its raw record."""

    cb: Chargeback
    raw: RawRecord
    watermark: int


@_positional_pickle
@dataclass(slots=True)
class OutMessage:
    """One message to produce, with its place in the ordered output of its origin.

    ``origin`` names a stream whose messages a replay emits again at the same
    ``position`` (an input partition and the record's offset; a merchant shard
    and the window's end; the drift or quality topic and its emission count or
    window start), and positions never go back within an epoch-ordered run.
    The exactly-once sink (:mod:`operators.fencing`) drops a replayed message
    at or below what it already committed for that origin.
    """

    topic: str
    key: bytes | None
    value: bytes
    origin: str = ""
    position: int = -1


@dataclass(slots=True)
class ToScore:
    """Transactions a merchant shard has featured, for the score step."""

    featured: list[Featured]


def json_value(record: Mapping[str, object]) -> bytes:
    """An output record's value: compact UTF-8 JSON, floats in their shortest round-trip form.

    The one encoding of every output topic (orjson); score records are built to
    the same bytes column by column (:mod:`operators.score_records`). Not a
    finite float is written as ``null``, never as JSON's invalid ``NaN``.
    """
    return orjson.dumps(record)


@_positional_pickle
@dataclass(slots=True)
class PartitionBatch:
    """What the source emits per poll of one partition, already decoded and judged."""

    source: str
    kind: Literal["transaction", "chargeback"]
    watermark: int  # after the batch
    idle: bool  # the partition had no records for the idle timeout
    txns: list[TxnEnvelope]
    chargebacks: list[CbEnvelope]
    dead: list[OutMessage]
    broadcast: bool  # the watermark moved enough to tell every shard


@_positional_pickle
@dataclass(slots=True)
class Featured:
    """A transaction that will be scored, with the features computed so far."""

    env: TxnEnvelope
    features: dict[str, float]
    watermark: int  # the upstream operator's watermark right after this record


@_positional_pickle
@dataclass(slots=True)
class Tick:
    """An upstream operator's watermark moved without a record to carry it."""

    watermark: int


@dataclass(slots=True)
class ShardInput:
    """A batch for one shard, with the watermark of the stream it came from.

    It is what crosses processes in a cluster (bytewax pickles every item routed
    to another process), so it pickles its records as rows of plain values:
    one Python call per batch instead of one per object, and no pydantic
    pickling per transaction. Most of the cost left is rebuilding the objects
    (``tests/unit/operators/test_messages.py`` checks the round trip is exact).
    """

    origin: str  # source partition or upstream shard that sent it
    watermark: int
    idle: bool
    txns: list[TxnEnvelope]
    ordered: list[Featured | CbEnvelope | Tick]  # merchant-stage input, in processing order
    target: str = ""  # the shard it is routed to (a logic does not otherwise know its key)

    def __reduce__(self) -> tuple[Any, ...]:
        return _shard_input, (
            self.origin,
            self.watermark,
            self.idle,
            self.target,
            [_envelope_row(env) for env in self.txns],
            [_ordered_row(item) for item in self.ordered],
        )


_ALL_TXN_FIELDS = frozenset(Transaction.model_fields)
# One tuple object per distinct feature-name sequence, so pickle writes it once a batch.
_FEATURE_NAMES: dict[tuple[str, ...], tuple[str, ...]] = {}

# (transaction field values, its fields set or None when all, topic, partition, offset,
#  key, value, timestamp, late, watermark)
_EnvelopeRow = tuple[Any, ...]


def _envelope_row(env: TxnEnvelope) -> _EnvelopeRow:
    txn, raw = env.txn, env.raw
    fields_set = txn.model_fields_set
    return (
        txn.__dict__,
        None if fields_set == _ALL_TXN_FIELDS else fields_set,
        raw.topic,
        raw.partition,
        raw.offset,
        raw.key,
        raw.value,
        raw.timestamp_ms,
        env.late,
        env.watermark,
    )


def _envelope(row: _EnvelopeRow) -> TxnEnvelope:
    # The transaction was validated where it was decoded: rebuild it without validating.
    txn = rebuild_model(Transaction, row[0], set(_ALL_TXN_FIELDS if row[1] is None else row[1]))
    return TxnEnvelope(txn, RawRecord(*row[2:8]), row[8], row[9])


def _ordered_row(item: Featured | CbEnvelope | Tick) -> Any:
    if not isinstance(item, Featured):
        return item  # chargebacks and ticks are few: pickled as they are
    names = tuple(item.features)
    if len(_FEATURE_NAMES) < 64:  # the stages build a handful of orders; bound it anyway
        names = _FEATURE_NAMES.setdefault(names, names)
    return (_envelope_row(item.env), names, tuple(item.features.values()), item.watermark)


def _shard_input(
    origin: str,
    watermark: int,
    idle: bool,
    target: str,
    txns: list[Any],
    ordered: list[Any],
) -> ShardInput:
    return ShardInput(
        origin,
        watermark,
        idle,
        [_envelope(row) for row in txns],
        [
            Featured(_envelope(item[0]), dict(zip(item[1], item[2], strict=True)), item[3])
            if isinstance(item, tuple)
            else item
            for item in ordered
        ],
        target,
    )
