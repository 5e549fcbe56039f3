"""The envelopes that travel between operators: records as consumed and as produced.

Items in the dataflow are *batches* (lists) of these, not single records:
one bytewax item per Kafka poll keeps the engine's per-item cost off the hot path.
They are slotted but not frozen: several are built per event, and a frozen
dataclass sets each field through ``object.__setattr__``, several times the
cost of a plain assignment. Treat them as read-only all the same.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt
import orjson

from operators.internals import rebuild_model
from schemas.records import Chargeback, Transaction

_T = TypeVar("_T")


def _positional_pickle(cls: type[_T]) -> type[_T]:
    """Pickle as ``cls(*values)``: items cross processes in a bytewax cluster.

    A positional constructor call is the cheapest way back to a slotted
    dataclass; the generic route sets fields one by one, by name. Fields the
    constructor derives (``init=False``) are derived again.
    """
    names = tuple(f.name for f in fields(cls) if f.init)  # type: ignore[arg-type]

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
    # The input partition's identity, ``topic#partition``: built once, read by every stage.
    source: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.source = f"{self.topic}#{self.partition}"


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

    block: FeatureBlock


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


@dataclass(slots=True, eq=False)  # arrays compare by element: compare the columns
class FeatureBlock:
    """Featured transactions as columns: the one shape from the card stage to the score step.

    Row ``i`` is the transaction ``envs[i]``; ``features[i]`` its features, one
    column per name of :data:`operators.columns.BLOCK_COLUMNS` (the card stage
    fills the card columns, the merchant stage the merchant columns, the score
    step the transaction columns); ``watermarks[i]`` the watermark of the
    operator that sent it, right after it. A duplicate the card stage dropped
    leaves its watermark in ``ticks`` as ``(rows before it, watermark)``, in
    order, so the watermark still applies at the duplicate's place.

    It pickles as columns: envelope rows, the two arrays and the ticks.
    """

    envs: list[TxnEnvelope]
    features: npt.NDArray[np.float64]  # [len(envs), len(BLOCK_COLUMNS)]
    watermarks: npt.NDArray[np.int64]  # [len(envs)]
    ticks: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.envs)

    def take(self, rows: list[int]) -> FeatureBlock:
        """The block of ``rows`` (ascending), in that order, with the ticks among them."""
        if len(rows) == len(self.envs):  # every row, in order: nothing to copy
            return self
        idx = np.asarray(rows, dtype=np.intp)
        envs = self.envs
        return FeatureBlock(
            [envs[r] for r in rows],
            self.features[idx],
            self.watermarks[idx],
            [(bisect_left(rows, pos), wm) for pos, wm in self.ticks],
        )

    def rows(self, lo: int, hi: int) -> FeatureBlock:
        """Rows ``lo`` to ``hi`` (no ticks: a slice of what the merchant stage emitted)."""
        return FeatureBlock(self.envs[lo:hi], self.features[lo:hi], self.watermarks[lo:hi], [])

    @staticmethod
    def concat(blocks: Sequence[FeatureBlock]) -> FeatureBlock:
        """The rows of ``blocks`` one after another (their ticks are left out)."""
        if len(blocks) == 1:
            only = blocks[0]
            return FeatureBlock(only.envs, only.features, only.watermarks, [])
        return FeatureBlock(
            [env for block in blocks for env in block.envs],
            np.concatenate([block.features for block in blocks]),
            np.concatenate([block.watermarks for block in blocks]),
            [],
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return _feature_block, (
            [_envelope_row(env) for env in self.envs],
            self.features,
            self.watermarks,
            self.ticks,
        )


def empty_block(width: int = 0) -> FeatureBlock:
    """A block of no rows (``width`` columns)."""
    return FeatureBlock([], np.empty((0, width)), np.empty(0, dtype=np.int64), [])


@_positional_pickle
@dataclass(slots=True)
class Tick:
    """An upstream operator's watermark at a duplicate's place in the merchant stage's order."""

    watermark: int


@dataclass(slots=True)
class ShardInput:
    """A batch for one shard, with the watermark of the stream it came from.

    It is what crosses processes in a cluster (bytewax pickles every item routed
    to another process), so it pickles its records as rows of plain values and
    its feature block as columns: one Python call per batch instead of one per
    object, and no pydantic pickling per transaction. Most of the cost left is
    rebuilding the envelopes (``tests/unit/operators/test_messages.py`` checks
    the round trip is exact).
    """

    origin: str  # source partition or upstream shard that sent it
    watermark: int
    idle: bool
    txns: list[TxnEnvelope]  # card-stage input
    featured: FeatureBlock | None  # merchant-stage input from a card shard
    chargebacks: list[CbEnvelope]  # merchant-stage input from a chargeback partition
    target: str = ""  # the shard it is routed to (a logic does not otherwise know its key)

    def __reduce__(self) -> tuple[Any, ...]:
        return _shard_input, (
            self.origin,
            self.watermark,
            self.idle,
            self.target,
            [_envelope_row(env) for env in self.txns],
            self.featured,
            self.chargebacks,  # few: pickled as they are
        )


_ALL_TXN_FIELDS = frozenset(Transaction.model_fields)

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


def _feature_block(
    envs: list[Any],
    features: npt.NDArray[np.float64],
    watermarks: npt.NDArray[np.int64],
    ticks: list[tuple[int, int]],
) -> FeatureBlock:
    return FeatureBlock([_envelope(row) for row in envs], features, watermarks, ticks)


def _shard_input(
    origin: str,
    watermark: int,
    idle: bool,
    target: str,
    txns: list[Any],
    featured: FeatureBlock | None,
    chargebacks: list[CbEnvelope],
) -> ShardInput:
    return ShardInput(
        origin, watermark, idle, [_envelope(row) for row in txns], featured, chargebacks, target
    )
