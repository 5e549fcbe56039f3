"""The rules fallback: range, monotonicity, the fraud patterns it targets, loud failures."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.rules import RULE_FEATURES, RULES, RULES_VERSION, fired_rules, rules_score, rules_scores
from models.simulator import SimConfig
from models.train import build_dataset
from operators.features import ALL_FEATURES

# An everyday in-store purchase by a card with a calm history.
ORDINARY: dict[str, float] = {
    "txn_amount": 27.5,
    "txn_log_amount": 3.35,
    "txn_hour_utc": 14.0,
    "txn_is_ecom": 0.0,
    "txn_has_device": 1.0,
    "card_count_1m": 1.0,
    "card_count_5m": 1.0,
    "card_count_1h": 2.0,
    "card_count_24h": 6.0,
    "card_amount_1m": 27.5,
    "card_amount_5m": 27.5,
    "card_amount_1h": 61.0,
    "card_amount_24h": 180.0,
    "card_distinct_merchants_1h": 2.0,
    "card_seconds_since_last": 1800.0,
    "card_amount_zscore": 0.2,
    "card_session_count": 1.0,
    "card_session_seconds": 0.0,
    "merchant_txn_count_prev_5m": 12.0,
    "merchant_chargeback_rate_prev_5m": 0.0,
}
# Online, no device, a string of tiny amounts on one card within minutes.
CARD_TESTING = {
    **ORDINARY,
    "txn_amount": 1.2,
    "txn_is_ecom": 1.0,
    "txn_has_device": 0.0,
    "card_count_1m": 2.0,
    "card_count_5m": 4.0,
    "card_seconds_since_last": 25.0,
}
# ...then the large purchase it was testing for.
TESTED_THEN_BIG = {**CARD_TESTING, "txn_amount": 450.0, "card_amount_zscore": 7.5}
# Many merchants in quick succession, each amount unremarkable for the card.
BURST = {
    **ORDINARY,
    "txn_amount": 95.0,
    "txn_is_ecom": 1.0,
    "card_count_1m": 5.0,
    "card_count_5m": 9.0,
    "card_count_1h": 10.0,
    "card_distinct_merchants_1h": 10.0,
    "card_seconds_since_last": 8.0,
    "card_amount_zscore": 1.1,
}
# One purchase far above what the card usually spends.
SPIKE = {**ORDINARY, "txn_amount": 1400.0, "card_amount_zscore": 9.0}

REVIEW, DECLINE = 0.3, 0.7  # the committed model's manifest thresholds
# Features where more means riskier: raising one alone must never lower the score.
RISK_FEATURES = (
    "card_distinct_merchants_1h",
    "card_count_1m",
    "card_count_5m",
    "card_amount_zscore",
    "merchant_chargeback_rate_prev_5m",
)

any_value = st.floats(allow_nan=True, allow_infinity=True)
feature_dicts = st.fixed_dictionaries({name: any_value for name in ALL_FEATURES})
plausible = st.fixed_dictionaries(
    {
        **{name: st.just(value) for name, value in ORDINARY.items()},
        "txn_amount": st.floats(0, 5000),
        "txn_is_ecom": st.sampled_from([0.0, 1.0]),
        "txn_has_device": st.sampled_from([0.0, 1.0]),
        "card_count_1m": st.integers(1, 20).map(float),
        "card_count_5m": st.integers(1, 40).map(float),
        "card_distinct_merchants_1h": st.integers(1, 30).map(float),
        "card_seconds_since_last": st.one_of(st.just(-1.0), st.floats(0, 90_000)),
        "card_amount_zscore": st.floats(-10, 50),
        "merchant_chargeback_rate_prev_5m": st.floats(0, 1),
    }
)


def test_version_and_rules_table() -> None:
    assert RULES_VERSION == "rules-1"
    assert set(RULE_FEATURES) <= set(ALL_FEATURES)
    assert len({rule.name for rule in RULES}) == len(RULES)
    assert all(0 < rule.weight < 1 for rule in RULES)


@given(feature_dicts)
def test_score_is_in_unit_interval(features: dict[str, float]) -> None:
    assert 0.0 <= rules_score(features) <= 1.0


def test_ordinary_purchase_fires_nothing_and_is_approved() -> None:
    assert fired_rules(ORDINARY) == []
    assert rules_score(ORDINARY) == 0.0


@pytest.mark.parametrize(
    ("features", "expected_rules"),
    [
        (CARD_TESTING, {"ecom_without_device", "card_testing"}),
        (TESTED_THEN_BIG, {"ecom_without_device", "amount_spike", "extreme_amount_spike"}),
        (BURST, {"merchant_hopping", "many_merchants", "rapid_fire"}),
        (SPIKE, {"amount_spike", "extreme_amount_spike", "large_amount"}),
    ],
    ids=["card_testing", "tested_then_big", "burst", "spike"],
)
def test_fraud_patterns_fire_their_rules_and_outscore_ordinary(
    features: dict[str, float], expected_rules: set[str]
) -> None:
    assert set(fired_rules(features)) == expected_rules
    assert rules_score(features) > rules_score(ORDINARY)


def test_decisions_at_the_manifest_thresholds() -> None:
    # Velocity alone stays an approve: busy honest cards look like this too.
    assert 0 < rules_score(BURST) < REVIEW
    # One strong signal reviews; two decline.
    assert REVIEW <= rules_score({**ORDINARY, "txn_is_ecom": 1.0, "txn_has_device": 0.0}) < DECLINE
    assert REVIEW <= rules_score(CARD_TESTING) < DECLINE
    assert REVIEW <= rules_score(SPIKE) < DECLINE
    assert rules_score(TESTED_THEN_BIG) >= DECLINE
    assert rules_score({**BURST, "txn_has_device": 0.0}) > rules_score(BURST)


def test_risky_merchant_raises_the_score() -> None:
    risky = {**ORDINARY, "merchant_chargeback_rate_prev_5m": 0.2}
    assert fired_rules(risky) == ["risky_merchant"]
    assert rules_score(risky) > 0.0


@pytest.mark.parametrize("name", RISK_FEATURES)
@given(base=plausible, more=st.floats(0, 100))
def test_more_of_a_risk_feature_never_lowers_the_score(
    name: str, base: dict[str, float], more: float
) -> None:
    assert rules_score({**base, name: base[name] + more}) >= rules_score(base)


@pytest.mark.parametrize("name", RISK_FEATURES)
@pytest.mark.parametrize(
    "base",
    [ORDINARY, CARD_TESTING, BURST, SPIKE],
    ids=["ordinary", "card_testing", "burst", "spike"],
)
def test_risk_feature_sweep_never_lowers_the_score(name: str, base: dict[str, float]) -> None:
    # Every threshold in the table is a multiple of 0.05 below 20, so this grid hits each edge.
    scores = [rules_score({**base, name: k * 0.05}) for k in range(401)]
    assert scores == sorted(scores)


@given(plausible)
def test_a_device_or_a_store_purchase_never_raises_the_score(base: dict[str, float]) -> None:
    assert rules_score({**base, "txn_has_device": 1.0}) <= rules_score(base)
    assert rules_score({**base, "txn_is_ecom": 0.0}) <= rules_score(base)


@pytest.mark.parametrize("name", RULE_FEATURES)
def test_missing_feature_raises_key_error_naming_it(name: str) -> None:
    # ORDINARY fires no rule, so this also checks that no short-circuit hides a gap.
    features = {k: v for k, v in ORDINARY.items() if k != name}
    with pytest.raises(KeyError) as info:
        rules_score(features)
    assert info.value.args == (name,)
    with pytest.raises(KeyError):
        rules_scores([ORDINARY, features])


def test_needs_only_its_own_features() -> None:
    only = {name: TESTED_THEN_BIG[name] for name in RULE_FEATURES}
    assert rules_score(only) == rules_score(TESTED_THEN_BIG)


@given(feature_dicts)
def test_deterministic_and_batch_matches_single(features: dict[str, float]) -> None:
    reordered = dict(reversed(list(features.items())))
    first = rules_score(features)
    assert rules_score(reordered) == first
    assert rules_score(features) == first
    rows = [features, ORDINARY, CARD_TESTING, features]
    assert rules_scores(rows) == [first, 0.0, rules_score(CARD_TESTING), first]
    assert rules_scores([]) == []


def test_separates_simulated_fraud() -> None:
    x, y = build_dataset(SimConfig(seed=5), 6_000)
    scores = np.array(
        rules_scores([dict(zip(ALL_FEATURES, row.tolist(), strict=True)) for row in x])
    )
    fraud, normal = scores[y == 1], scores[y == 0]
    assert len(fraud) >= 30
    assert (fraud >= REVIEW).mean() >= 0.6
    assert (normal >= REVIEW).mean() <= 0.1
    assert (normal >= DECLINE).mean() <= 0.01
