"""The columns of a feature block: every feature the service computes, in one order.

A :class:`operators.messages.FeatureBlock` holds one row per transaction and
one column per name of :data:`BLOCK_COLUMNS`: the card features as the card
kernel writes them (:data:`operators.card_kernel.OUTPUT`), then the merchant
features, then the transaction features. That is also the order a Score
record lists its features in.
"""

from __future__ import annotations

from operators.card_kernel import OUTPUT as CARD_COLUMNS

MERCHANT_FEATURES: tuple[str, ...] = (
    "merchant_txn_count_prev_5m",
    "merchant_chargeback_rate_prev_5m",
)
TXN_FEATURES: tuple[str, ...] = (
    "txn_amount",
    "txn_log_amount",
    "txn_hour_utc",
    "txn_is_ecom",
    "txn_has_device",
)
BLOCK_COLUMNS: tuple[str, ...] = (*CARD_COLUMNS, *MERCHANT_FEATURES, *TXN_FEATURES)
# Where each group's columns start in a block.
MERCHANT_COLUMN = len(CARD_COLUMNS)
TXN_COLUMN = MERCHANT_COLUMN + len(MERCHANT_FEATURES)
