"""The envelopes that travel between operators: records as consumed and as produced.

Items in the dataflow are *batches* (lists) of these, not single records:
one bytewax item per Kafka poll keeps the engine's per-item cost off the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.records import Transaction


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One Kafka message as consumed, with its source coordinates."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class TxnEnvelope:
    """A valid transaction with where it came from and when it reached Kafka."""

    txn: Transaction
    topic: str
    partition: int
    offset: int
    ingest_ms: int


@dataclass(frozen=True, slots=True)
class OutMessage:
    """One message to produce."""

    topic: str
    key: bytes | None
    value: bytes
