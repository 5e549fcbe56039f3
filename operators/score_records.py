"""A scored batch as columns, and its Score records encoded from them.

A batch's transactions are already columns
(:class:`operators.messages.TxnColumns`); :func:`txn_table` computes their
transaction features from them, and :class:`ScoredBatch` holds the scoring
outcome in columns (scores, decision codes, which model decided each row, the
shadow scores), so nothing is built per record until the records themselves.

A record is exactly the bytes ``orjson.dumps`` gives for its dict (key order,
float formatting, escapes)::

    {"event_id", "card_id", "merchant_id", "event_time", "score", "decision",
     "model_version", "fallback", "late", "features", "shadow", "processed_at"}

with ``features`` every column of the batch's feature block, in block order
(:data:`operators.columns.BLOCK_COLUMNS`: card, merchant, then transaction
features). Each column is serialised once per batch, by one ``orjson.dumps`` of
the column's list or array (the feature table's in one call, row-major), and
:func:`operators.json_fill.fill` writes every record from those bytes and a
template of the batch's constant parts in one compiled pass: a value keeps the
exact bytes orjson gave it, and nothing is built per value in Python.

Time rules and state: none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter

import numpy as np
import numpy.typing as npt
import orjson

from models.manifest import Thresholds
from operators.columns import BLOCK_COLUMNS, TXN_FEATURES
from operators.json_fill import fill
from operators.messages import OutMessage, TxnColumns
from schemas.timefmt import format_ms_many

FeatureTable = npt.NDArray[np.float64]
DECISION_NAMES: tuple[str, ...] = ("approve", "review", "decline")
_DECISION_NAMES = np.array(DECISION_NAMES, dtype=object)
_MS_PER_HOUR = 3_600_000
_SOURCE, _OFFSET = attrgetter("source"), attrgetter("offset")
# A record's template (operators.json_fill) up to its last feature's value: each
# fragment ends where a value goes. Value slot s takes column _SLOTS[s] of the columns
# ScoredBatch.messages lists: the record's fields, then the feature table's row-major
# values (column 9), one slot per feature; with a shadow, its score (column 10) last.
_FIELDS = (
    "event_id",
    "card_id",
    "merchant_id",
    "event_time",
    "score",
    "decision",
    "model_version",
    "fallback",
    "late",
)
_HEAD = tuple((b"," if i else b"{") + orjson.dumps(name) + b":" for i, name in enumerate(_FIELDS))
_FEATURES = tuple(
    (b"," if i else b',"features":{') + orjson.dumps(name) + b":"
    for i, name in enumerate(BLOCK_COLUMNS)
)
_SLOTS = (*range(len(_FIELDS)), *[len(_FIELDS)] * len(BLOCK_COLUMNS))
_SHADOW_SLOTS = (*_SLOTS, len(_FIELDS) + 1)


def decision_codes(thresholds: Thresholds, scores: FeatureTable) -> npt.NDArray[np.intp]:
    """Index into :data:`DECISION_NAMES` of ``thresholds.decide`` of each score."""
    decline = scores >= thresholds.decline
    review = scores >= thresholds.review
    return np.where(decline, 2, np.where(review, 1, 0)).astype(np.intp)


def txn_table(txns: TxnColumns) -> FeatureTable:
    """``[n, len(TXN_FEATURES)]``: :func:`operators.features.txn_features` of each row."""
    n = len(txns)
    out = np.empty((len(TXN_FEATURES), n), dtype=np.float64)
    out[0] = txns.amount
    out[1] = np.fromiter(map(math.log1p, txns.amount), np.float64, n)
    out[2] = (np.asarray(txns.event_time, dtype=np.int64) // _MS_PER_HOUR) % 24
    out[3] = txns.ecom
    out[4] = txns.has_device
    return out.T


@dataclass(slots=True)
class ScoredBatch:
    """A batch's features and outcomes as columns, in batch order."""

    txns: TxnColumns
    table: FeatureTable  # [n, len(BLOCK_COLUMNS)]: every feature, transaction ones included
    scores: FeatureTable
    codes: npt.NDArray[np.intp]  # index into DECISION_NAMES
    version_of: npt.NDArray[np.intp]  # index into versions
    versions: list[tuple[str, bool]]  # (model_version, fallback) of each deciding group
    shadow: tuple[str, FeatureTable] | None  # the shadow model's version and scores

    def decisions(self) -> list[str]:
        """Each row's decision."""
        names = np.array(DECISION_NAMES, dtype=object)
        return list(names[self.codes])

    def rows_of(self, version: str) -> npt.NDArray[np.intp]:
        """Rows, in order, that the model named ``version`` decided (or the rules, so named)."""
        if not self.versions:
            return np.zeros(0, dtype=np.intp)
        mine = np.array([v == version for v, _fallback in self.versions], dtype=bool)
        return np.flatnonzero(mine[self.version_of])

    def messages(self, topic: str, processed_at: str) -> list[OutMessage]:
        """One Score message per row, keyed by card, placed at its input record's offset."""
        txns = self.txns
        n = len(txns.raw)
        if not n:
            return []
        names = np.array([v for v, _ in self.versions], dtype=object)
        fallbacks = np.array([f for _, f in self.versions], dtype=np.bool_)
        columns = [
            orjson.dumps(txns.event_id),
            orjson.dumps(txns.card_id),
            orjson.dumps(txns.merchant_id),
            orjson.dumps(format_ms_many(txns.event_time)),
            _dumped_floats(self.scores),
            orjson.dumps(_DECISION_NAMES[self.codes].tolist()),
            orjson.dumps(names[self.version_of].tolist()),
            orjson.dumps(fallbacks[self.version_of], option=orjson.OPT_SERIALIZE_NUMPY),
            orjson.dumps(txns.late),
            _dumped_floats(self.table),
        ]
        template = [*_HEAD, *_FEATURES]
        if self.shadow is None:
            template.append(b'},"shadow":null,"processed_at":')
            slots = _SLOTS
        else:
            version, scores = self.shadow
            shadow = b'},"shadow":{"model_version":' + orjson.dumps(version) + b',"score":'
            template += [shadow, b'},"processed_at":']
            columns.append(_dumped_floats(scores))
            slots = _SHADOW_SLOTS
        template[-1] += orjson.dumps(processed_at) + b"}"
        records = fill(template, columns, slots, n)
        keys = list(map(str.encode, txns.card_id))
        sources, offsets = map(_SOURCE, txns.raw), map(_OFFSET, txns.raw)
        return list(map(OutMessage, repeat(topic, n), keys, records, sources, offsets))


def _dumped_floats(values: npt.NDArray[np.floating]) -> bytes:
    """orjson's serialisation of ``values``' list, row-major, each value as a Python float.

    orjson formats a float64 array's values straight from the array, with the
    writer it uses for Python floats, so no float object is made per value.
    Other dtypes go through Python floats (a float32's shortest form differs).
    """
    if values.dtype != np.float64:
        return orjson.dumps(values.ravel().tolist())
    flat = np.ascontiguousarray(values).ravel()
    return orjson.dumps(flat, option=orjson.OPT_SERIALIZE_NUMPY)
