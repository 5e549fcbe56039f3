"""The rules fallback: a hand-written fraud score for when the ONNX model cannot score.

Used when inference fails, times out or its circuit breaker is open (the score
then carries ``"fallback": true`` and :data:`RULES_VERSION`). It reads only
feature names from :data:`operators.features.ALL_FEATURES`, is deterministic,
and needs no training or numpy. Each rule fires or not; the score combines the
weights of the rules that fire as independent evidence (noisy-OR)::

    score = 1 - product(1 - weight for each rule that fires)

so it is always in [0, 1], is 0 when no rule fires, and never drops when
another rule fires.

=====================  =====================================================  ======
rule                   fires when                                             weight
=====================  =====================================================  ======
ecom_without_device    ``txn_is_ecom`` is 1 and ``txn_has_device`` is 0        0.40
card_testing           ``txn_amount <= 2`` and ``card_count_5m >= 2``          0.40
amount_spike           ``card_amount_zscore >= 3``                             0.20
extreme_amount_spike   ``card_amount_zscore >= 6``                             0.45
large_amount           ``txn_amount >= 1000``                                  0.20
merchant_hopping       ``card_distinct_merchants_1h >= 6`` and                 0.10
                       ``card_count_5m >= 5``
many_merchants         ``card_distinct_merchants_1h >= 10``                    0.10
rapid_fire             ``card_count_1m >= 5`` and                              0.10
                       ``0 <= card_seconds_since_last < 10``
risky_merchant         ``merchant_chargeback_rate_prev_5m >= 0.1``             0.25
=====================  =====================================================  ======

They follow the fraud patterns of :mod:`models.simulator`: card testing (tiny
amounts, then a large one that spikes the z-score), amount spikes, bursts
across many merchants, and compromised cards used online without the card's
device. Against the default thresholds (review 0.3, decline 0.7) one strong
rule reviews, two strong ones decline (e.g. ecom without device and an extreme
spike: 0.74). The velocity rules are weak on their own, because busy honest
cards trip them too: all three together give 0.27, still an approve; they tip
a transaction over a line only beside a stronger signal.

A feature the rules read that is missing raises ``KeyError`` naming it: a
fallback that silently defaulted would hide a broken feature pipeline exactly
when the model is already down.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

RULES_VERSION = "rules-1"

# Every feature a rule reads; all are read (and checked) before any rule runs.
RULE_FEATURES: tuple[str, ...] = (
    "txn_amount",
    "txn_is_ecom",
    "txn_has_device",
    "card_count_1m",
    "card_count_5m",
    "card_distinct_merchants_1h",
    "card_seconds_since_last",
    "card_amount_zscore",
    "merchant_chargeback_rate_prev_5m",
)


@dataclass(frozen=True)
class Rule:
    """One named condition over features and the weight of its evidence, in (0, 1)."""

    name: str
    weight: float
    fires: Callable[[Mapping[str, float]], bool]


RULES: tuple[Rule, ...] = (
    Rule(
        "ecom_without_device",
        0.40,
        lambda f: f["txn_is_ecom"] >= 0.5 and f["txn_has_device"] < 0.5,
    ),
    Rule("card_testing", 0.40, lambda f: f["txn_amount"] <= 2.0 and f["card_count_5m"] >= 2),
    Rule("amount_spike", 0.20, lambda f: f["card_amount_zscore"] >= 3.0),
    Rule("extreme_amount_spike", 0.45, lambda f: f["card_amount_zscore"] >= 6.0),
    Rule("large_amount", 0.20, lambda f: f["txn_amount"] >= 1000.0),
    Rule(
        "merchant_hopping",
        0.10,
        lambda f: f["card_distinct_merchants_1h"] >= 6 and f["card_count_5m"] >= 5,
    ),
    Rule("many_merchants", 0.10, lambda f: f["card_distinct_merchants_1h"] >= 10),
    Rule(
        "rapid_fire",
        0.10,
        lambda f: f["card_count_1m"] >= 5 and 0.0 <= f["card_seconds_since_last"] < 10.0,
    ),
    Rule("risky_merchant", 0.25, lambda f: f["merchant_chargeback_rate_prev_5m"] >= 0.1),
)


def fired_rules(features: Mapping[str, float]) -> list[str]:
    """Names of the rules that fire for one transaction, in table order."""
    values = _read(features)
    return [rule.name for rule in RULES if rule.fires(values)]


def rules_score(features: Mapping[str, float]) -> float:
    """Fraud score in [0, 1] of one transaction's features.

    >>> ordinary = {name: 0.0 for name in RULE_FEATURES}
    >>> rules_score({**ordinary, "txn_amount": 30.0, "txn_has_device": 1.0})
    0.0
    >>> round(rules_score({**ordinary, "txn_amount": 30.0, "txn_is_ecom": 1.0}), 2)
    0.4
    """
    values = _read(features)
    keep = 1.0
    for rule in RULES:
        if rule.fires(values):
            keep *= 1.0 - rule.weight
    return 1.0 - keep


def rules_scores(rows: Sequence[Mapping[str, float]]) -> list[float]:
    """:func:`rules_score` of each row, in order."""
    return [rules_score(row) for row in rows]


def _read(features: Mapping[str, float]) -> dict[str, float]:
    values: dict[str, float] = {}
    for name in RULE_FEATURES:
        if name not in features:
            raise KeyError(name)
        values[name] = float(features[name])
    return values
