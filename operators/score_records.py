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
features). Each column is serialised once per batch: one ``orjson.dumps`` of the
column's list, split on a separator that its output holds only between values
(checked by counting the pieces, else one value at a time). A record is then one
``bytes %`` of a template holding the batch's constant parts: allocating one
``orjson`` output per record costs several times that.

Time rules and state: none.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter

import numpy as np
import numpy.typing as npt
import orjson

from models.manifest import Thresholds
from operators.columns import BLOCK_COLUMNS, TXN_FEATURES
from operators.messages import OutMessage, TxnColumns
from schemas.timefmt import format_ms_many

FeatureTable = npt.NDArray[np.float64]
DECISION_NAMES: tuple[str, ...] = ("approve", "review", "decline")
_DECISION_BYTES = np.array([d.encode() for d in DECISION_NAMES], dtype=object)
_MS_PER_HOUR = 3_600_000
_SOURCE, _OFFSET = attrgetter("source"), attrgetter("offset")
# Strings orjson writes as they are between their quotes: no quote, backslash or
# control character (escaped) and no surrogate (refused).
_ESCAPED = re.compile('["\\\\\x00-\x1f\ud800-\udfff]')


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
        n = len(txns.event_id)
        if not n:
            return []
        keys = list(map(str.encode, txns.card_id))
        versions = self.versions
        columns = [
            _escaped(txns.event_id),
            keys if _ESCAPED.search("".join(txns.card_id)) is None else _escaped(txns.card_id),
            _escaped(txns.merchant_id),
            list(map(str.encode, format_ms_many(txns.event_time))),
            _dumped_floats(self.scores),
            list(_DECISION_BYTES[self.codes]),
            list(np.array([orjson.dumps(v) for v, _ in versions], dtype=object)[self.version_of]),
            list(np.array([orjson.dumps(f) for _, f in versions], dtype=object)[self.version_of]),
            _dumped(txns.late),
        ]
        template = (
            b'{"event_id":"%b","card_id":"%b","merchant_id":"%b","event_time":"%b","score":%b,'
            b'"decision":"%b","model_version":%b,"fallback":%b,"late":%b,"features":{'
        )
        # The features, one piece a value (row-major): column i is every width-th piece.
        width = len(BLOCK_COLUMNS)
        values = _dumped_floats(self.table)
        template += b",".join(b'"' + name.encode() + b'":%b' for name in BLOCK_COLUMNS)
        columns.extend(values[i::width] for i in range(width))
        if self.shadow is None:
            template += b'},"shadow":null'
        else:
            version, scores = self.shadow
            shade = b'{"model_version":' + _literal(orjson.dumps(version)) + b',"score":%b}'
            template += b'},"shadow":%b'
            columns.append(list(map(shade.__mod__, _dumped_floats(scores))))
        template += b',"processed_at":' + _literal(orjson.dumps(processed_at)) + b"}"
        records = list(map(template.__mod__, zip(*columns, strict=True)))
        sources, offsets = map(_SOURCE, txns.raw), map(_OFFSET, txns.raw)
        return list(map(OutMessage, repeat(topic, n), keys, records, sources, offsets))


def _literal(text: bytes) -> bytes:
    """``text`` as literal bytes of a ``%`` template."""
    return text.replace(b"%", b"%%")


def _escaped(strings: Sequence[str]) -> list[bytes]:
    """Each string as orjson writes it between its quotes."""
    if _ESCAPED.search("".join(strings)) is None:
        return list(map(str.encode, strings))
    return [orjson.dumps(s)[1:-1] for s in strings]


def _dumped_floats(values: npt.NDArray[np.floating]) -> list[bytes]:
    """Each value, in row-major order, as orjson writes it as a Python float.

    orjson formats a float64 array's values straight from the array, with the
    writer it uses for Python floats, so no float object is made per value.
    Other dtypes go through Python floats (a float32's shortest form differs).
    """
    if values.dtype != np.float64:
        return _dumped(values.ravel().tolist())
    flat = np.ascontiguousarray(values).ravel()
    pieces = orjson.dumps(flat, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].split(b",")
    if len(pieces) != len(flat):  # an empty array
        return _dumped(flat.tolist())
    return pieces


def _dumped(values: Sequence[object]) -> list[bytes]:
    """Each value as orjson writes it: one call for the list, cut at its commas."""
    pieces = orjson.dumps(values)[1:-1].split(b",")
    if len(pieces) != len(values):  # a value with a comma of its own
        return [orjson.dumps(v) for v in values]
    return pieces
