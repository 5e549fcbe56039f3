"""The envelopes that travel between operators: records as consumed and as produced.

Items in the dataflow are *batches* (lists) of these, not single records:
one bytewax item per Kafka poll keeps the engine's per-item cost off the hot path.
They are slotted but not frozen: several are built per event, and a frozen
dataclass sets each field through ``object.__setattr__`` (measured 1.17 vs
0.25 us for six fields). Treat them as read-only all the same.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal, TypeVar

from schemas.records import Chargeback, Transaction

_T = TypeVar("_T")


def _positional_pickle(cls: type[_T]) -> type[_T]:
    """Pickle as ``cls(*values)``: items cross processes in a bytewax cluster.

    The default for these slotted dataclasses (when they were frozen) unpickled
    through ``dataclasses._dataclass_setstate``, which looks up ``fields()`` per
    object: measured 45 us to pickle and unpickle one :class:`Featured`.
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
    """One message to produce."""

    topic: str
    key: bytes | None
    value: bytes


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


@_positional_pickle
@dataclass(slots=True)
class ShardInput:
    """A batch for one shard, with the watermark of the stream it came from."""

    origin: str  # source partition or upstream shard that sent it
    watermark: int
    idle: bool
    txns: list[TxnEnvelope]
    ordered: list[Featured | CbEnvelope | Tick]  # merchant-stage input, in processing order
    target: str = ""  # the shard it is routed to (a logic does not otherwise know its key)
