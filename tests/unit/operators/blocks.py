"""Transaction columns and feature blocks built from records, for tests that list records."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from operators.columns import BLOCK_COLUMNS, TXN_COLUMN
from operators.messages import FeatureBlock, RawRecord, TxnColumns, txn_row
from schemas.records import Transaction

UPSTREAM = BLOCK_COLUMNS[:TXN_COLUMN]  # what the card and merchant stages fill


@dataclass(slots=True)
class TxnRecord:
    """One transaction as a test states it: validated, with its raw record and time verdict."""

    txn: Transaction
    raw: RawRecord
    late: bool = False
    watermark: int = 0  # its partition's, right after it


def columns_of(records: Iterable[TxnRecord]) -> TxnColumns:
    """``records`` as the decoder's columns, in order."""
    recs = list(records)
    return TxnColumns.from_rows(
        [txn_row(rec.txn) for rec in recs],
        [rec.raw for rec in recs],
        [rec.late for rec in recs],
        [rec.watermark for rec in recs],
    )


@dataclass(slots=True)
class Featured:
    """A transaction and its card and merchant features by name."""

    rec: TxnRecord
    features: dict[str, float]


def block_of(items: Sequence[Featured]) -> FeatureBlock:
    """A block of ``items`` as the merchant stage emits it: transaction columns still to fill.

    Every item names every card and merchant feature (a KeyError otherwise).
    The transaction columns hold NaN: the score step must overwrite them.
    """
    features = np.full((len(items), len(BLOCK_COLUMNS)), np.nan)
    for i, item in enumerate(items):
        features[i, :TXN_COLUMN] = [item.features[name] for name in UPSTREAM]
    marks = np.zeros(len(items), dtype=np.int64)
    return FeatureBlock(columns_of(item.rec for item in items), features, marks, [])
