"""Feature vectors for scoring.

Owns the names and order of every feature the service computes: the
contract's card and merchant features (from :mod:`operators.card_features` and
:mod:`operators.merchant_windows`) and transaction features (``txn_*``), which
depend only on the record itself: no state, no clock, no lateness rule. A
model's manifest picks the features it uses, in its own input order, from
what this module computes.
"""

from __future__ import annotations

import math

from operators.card_features import CARD_FEATURES
from operators.columns import MERCHANT_FEATURES, TXN_FEATURES
from schemas.records import Transaction

ALL_FEATURES: tuple[str, ...] = (*TXN_FEATURES, *CARD_FEATURES, *MERCHANT_FEATURES)

_MS_PER_HOUR = 3_600_000


def txn_features(txn: Transaction) -> dict[str, float]:
    """Features of one transaction on its own.

    >>> from schemas.records import Transaction
    >>> t = Transaction(event_id="e", card_id="c", merchant_id="m", amount=99.0,
    ...                 currency="EUR", event_time=7_200_000, channel="ecom")
    >>> txn_features(t)["txn_hour_utc"], txn_features(t)["txn_is_ecom"]
    (2.0, 1.0)
    """
    return {
        "txn_amount": txn.amount,
        "txn_log_amount": math.log1p(txn.amount),
        "txn_hour_utc": float((txn.event_time // _MS_PER_HOUR) % 24),
        "txn_is_ecom": 1.0 if txn.channel == "ecom" else 0.0,
        "txn_has_device": 0.0 if txn.device_id is None else 1.0,
    }
