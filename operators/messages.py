"""What travels between operators: records as consumed and as produced, and their batches.

Items in the dataflow are *batches*, not single records: one bytewax item per
Kafka poll keeps the engine's per-item cost off the hot path. Transactions
travel as columns (:class:`TxnColumns`, then :class:`FeatureBlock`);
chargebacks as slotted dataclasses, raw records and output messages as msgspec
structs. None is frozen: a frozen dataclass sets each field through
``object.__setattr__``, several times the cost of a plain assignment. Treat
them as read-only all the same.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from itertools import chain
from operator import attrgetter, itemgetter
from typing import Any, Literal, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt
import orjson

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


class RawRecord(msgspec.Struct, gc=False):
    """One Kafka message as consumed, with its source coordinates.

    A msgspec struct outside the cycle collector: the source builds one per
    record, and a cluster builds them again from the columns it receives.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    # The input partition's identity, ``topic#partition``: read by every stage. The
    # Kafka source passes the one string it built for the partition (formatting it
    # for each record is a measurable share); left out, it is derived.
    source: str = ""

    def __post_init__(self) -> None:
        if not self.source:
            self.source = f"{self.topic}#{self.partition}"


TxnRow = tuple[str, str, str, int, float, bool, bool]
# The same values for a batch, column by column.
TxnRowColumns = tuple[
    list[str], list[str], list[str], list[int], list[float], list[bool], list[bool]
]


def txn_row(txn: Transaction) -> TxnRow:
    """The column values of a validated transaction, as :mod:`operators.decode_fast` yields them."""
    return (
        txn.event_id,
        txn.card_id,
        txn.merchant_id,
        txn.event_time,
        txn.amount,
        txn.channel == "ecom",
        txn.device_id is not None,
    )


@dataclass(slots=True, eq=False)
class TxnColumns:
    """Accepted transactions as columns: the one shape from the decoder to the score step.

    Row ``i`` is one transaction: the fields later stages read (its ids, event
    time, amount, and the two flags the transaction features need), whether
    its partition judged it late, that partition's watermark right after it,
    and its raw record (for dead letters, blame and ingest order). The other
    fields of the contract are validated at decode and not kept.

    It pickles as columns (a bytewax cluster sends it between processes): a
    few lists, the raw records' fields among them, not an object per row.
    """

    event_id: list[str] = field(default_factory=list)
    card_id: list[str] = field(default_factory=list)
    merchant_id: list[str] = field(default_factory=list)
    event_time: list[int] = field(default_factory=list)
    amount: list[float] = field(default_factory=list)
    ecom: list[bool] = field(default_factory=list)  # channel == "ecom"
    has_device: list[bool] = field(default_factory=list)  # device_id is not None
    late: list[bool] = field(default_factory=list)
    watermark: list[int] = field(default_factory=list)  # the partition's, right after the row
    raw: list[RawRecord] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.raw)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TxnColumns):
            return NotImplemented
        return self._columns() == other._columns()

    @classmethod
    def from_rows(
        cls, rows: list[TxnRow], raw: list[RawRecord], late: list[bool], watermark: list[int]
    ) -> TxnColumns:
        """Transactions ``rows`` (each :func:`txn_row` of one), with their other columns.

        Transposed in one C-level ``zip``: cheaper than appending to each column per row.
        """
        if not rows:
            return cls(late=late, watermark=watermark, raw=raw)
        ids, cards, merchants, times, amounts, ecom, devices = map(list, zip(*rows, strict=True))
        return cls(ids, cards, merchants, times, amounts, ecom, devices, late, watermark, raw)

    def take(self, rows: Sequence[int]) -> TxnColumns:
        """The rows ``rows``, in that order, copied."""
        if not rows:
            return TxnColumns()
        if len(rows) == 1:  # itemgetter of one index gives the item, not a tuple
            return TxnColumns(*([column[rows[0]]] for column in self._columns()))
        get = itemgetter(*rows)
        return TxnColumns(*(list(get(column)) for column in self._columns()))

    def rows(self, lo: int, hi: int) -> TxnColumns:
        """Rows ``lo`` to ``hi``."""
        return TxnColumns(*(column[lo:hi] for column in self._columns()))

    @staticmethod
    def concat(parts: Sequence[TxnColumns]) -> TxnColumns:
        """The rows of ``parts`` one after another."""
        if len(parts) == 1:
            return parts[0]
        columns = [c._columns() for c in parts]
        return TxnColumns(*(list(chain.from_iterable(c)) for c in zip(*columns, strict=True)))

    def _columns(self) -> tuple[list[Any], ...]:
        return (
            self.event_id,
            self.card_id,
            self.merchant_id,
            self.event_time,
            self.amount,
            self.ecom,
            self.has_device,
            self.late,
            self.watermark,
            self.raw,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        raw = self.raw
        raw_columns = tuple(list(map(get, raw)) for get in _RAW_FIELDS)
        return _txn_columns, (*self._columns()[:-1], raw_columns)


_RAW_FIELDS = tuple(
    attrgetter(name)
    for name in ("topic", "partition", "offset", "key", "value", "timestamp_ms", "source")
)


def _txn_columns(
    event_id: list[str],
    card_id: list[str],
    merchant_id: list[str],
    event_time: list[int],
    amount: list[float],
    ecom: list[bool],
    has_device: list[bool],
    late: list[bool],
    watermark: list[int],
    raw: tuple[list[Any], ...],
) -> TxnColumns:
    raws = list(map(RawRecord, *raw))
    return TxnColumns(
        event_id, card_id, merchant_id, event_time, amount, ecom, has_device, late, watermark, raws
    )


@_positional_pickle
@dataclass(slots=True)
class CbEnvelope:
    """A valid chargeback and its raw record."""

    cb: Chargeback
    raw: RawRecord
    watermark: int


class OutMessage(msgspec.Struct, gc=False):
    """One message to produce, with its place in the ordered output of its origin.

    A msgspec struct, not a dataclass: one is built for every score, and a
    struct is built, read and freed in C, outside the cycle collector (it
    holds no container). About 155 against 255 ns a message to build, read
    and drop in a micro-benchmark.

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
    txns: TxnColumns
    chargebacks: list[CbEnvelope]
    dead: list[OutMessage]
    broadcast: bool  # the watermark moved enough to tell every shard


@_positional_pickle
@dataclass(slots=True, eq=False)  # arrays compare by element: compare the columns
class FeatureBlock:
    """Featured transactions as columns: the one shape from the card stage to the score step.

    Row ``i`` is the transaction of row ``i`` of ``txns``; ``features[i]`` its
    features, one column per name of :data:`operators.columns.BLOCK_COLUMNS`
    (the card stage fills the card columns, the merchant stage the merchant
    columns, the score step the transaction columns); ``watermarks[i]`` the
    watermark of the operator that sent it, right after it. A duplicate the
    card stage dropped leaves its watermark in ``ticks`` as ``(rows before
    it, watermark)``, in order, so the watermark still applies at the
    duplicate's place.

    It pickles as columns: the transactions' columns, the two arrays and the ticks.
    """

    txns: TxnColumns
    features: npt.NDArray[np.float64]  # [len(txns), len(BLOCK_COLUMNS)]
    watermarks: npt.NDArray[np.int64]  # [len(txns)]
    ticks: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.txns)

    def take(self, rows: list[int]) -> FeatureBlock:
        """The block of ``rows`` (ascending), in that order, with the ticks among them."""
        if len(rows) == len(self.txns):  # every row, in order: nothing to copy
            return self
        idx = np.asarray(rows, dtype=np.intp)
        return FeatureBlock(
            self.txns.take(rows),
            self.features[idx],
            self.watermarks[idx],
            [(bisect_left(rows, pos), wm) for pos, wm in self.ticks],
        )

    def rows(self, lo: int, hi: int) -> FeatureBlock:
        """Rows ``lo`` to ``hi`` (no ticks: a slice of what the merchant stage emitted)."""
        if lo == 0 and hi >= len(self.txns) and not self.ticks:
            return self
        return FeatureBlock(
            self.txns.rows(lo, hi), self.features[lo:hi], self.watermarks[lo:hi], []
        )

    @staticmethod
    def concat(blocks: Sequence[FeatureBlock]) -> FeatureBlock:
        """The rows of ``blocks`` one after another (their ticks are left out)."""
        if len(blocks) == 1:
            only = blocks[0]
            return FeatureBlock(only.txns, only.features, only.watermarks, [])
        return FeatureBlock(
            TxnColumns.concat([block.txns for block in blocks]),
            np.concatenate([block.features for block in blocks]),
            np.concatenate([block.watermarks for block in blocks]),
            [],
        )


def empty_block(width: int = 0) -> FeatureBlock:
    """A block of no rows (``width`` columns)."""
    return FeatureBlock(TxnColumns(), np.empty((0, width)), np.empty(0, dtype=np.int64), [])


@_positional_pickle
@dataclass(slots=True)
class Tick:
    """An upstream operator's watermark at a duplicate's place in the merchant stage's order."""

    watermark: int


@_positional_pickle
@dataclass(slots=True)
class ShardInput:
    """A batch for one shard, with the watermark of the stream it came from.

    It is what crosses processes in a cluster (bytewax pickles every item routed
    to another process): its transactions and feature block pickle as columns,
    a few lists and arrays a batch rather than an object per record
    (``tests/unit/operators/test_messages.py`` checks the round trip is exact).
    """

    origin: str  # source partition or upstream shard that sent it
    watermark: int
    idle: bool
    txns: TxnColumns  # card-stage input
    featured: FeatureBlock | None  # merchant-stage input from a card shard
    chargebacks: list[CbEnvelope]  # merchant-stage input from a chargeback partition
    target: str = ""  # the shard it is routed to (a logic does not otherwise know its key)
