"""The envelopes that travel between operators: records as consumed and as produced.

Items in the dataflow are *batches* (lists) of these, not single records:
one bytewax item per Kafka poll keeps the engine's per-item cost off the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from schemas.records import Chargeback, Transaction


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class TxnEnvelope:
    """A valid transaction, its raw record, and its partition's verdict on time."""

    txn: Transaction
    raw: RawRecord
    late: bool
    watermark: int  # the partition's watermark right after this record


@dataclass(frozen=True, slots=True)
class CbEnvelope:
    """A valid chargeback and its raw record."""

    cb: Chargeback
    raw: RawRecord
    watermark: int


@dataclass(frozen=True, slots=True)
class OutMessage:
    """One message to produce."""

    topic: str
    key: bytes | None
    value: bytes


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class Featured:
    """A transaction that will be scored, with the features computed so far."""

    env: TxnEnvelope
    features: dict[str, float]
    watermark: int  # the upstream operator's watermark right after this record


@dataclass(frozen=True, slots=True)
class Tick:
    """An upstream operator's watermark moved without a record to carry it."""

    watermark: int


@dataclass(frozen=True, slots=True)
class ShardInput:
    """A batch for one shard, with the watermark of the stream it came from."""

    origin: str  # source partition or upstream shard that sent it
    watermark: int
    idle: bool
    txns: list[TxnEnvelope]
    ordered: list[Featured | CbEnvelope | Tick]  # merchant-stage input, in processing order
    target: str = ""  # the shard it is routed to (a logic does not otherwise know its key)
