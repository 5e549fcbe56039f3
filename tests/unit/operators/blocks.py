"""Feature blocks built from per-record features, for tests that state features by name."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from operators.columns import BLOCK_COLUMNS, TXN_COLUMN
from operators.messages import FeatureBlock, TxnEnvelope

UPSTREAM = BLOCK_COLUMNS[:TXN_COLUMN]  # what the card and merchant stages fill


@dataclass(slots=True)
class Featured:
    """A transaction and its card and merchant features by name."""

    env: TxnEnvelope
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
    return FeatureBlock([item.env for item in items], features, marks, [])
