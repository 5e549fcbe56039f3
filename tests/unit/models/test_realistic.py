"""The realistic simulator: rates, cycles, homes, rare fraud in three scenarios, late labels."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace

import pytest

from models.realistic import RealisticConfig, activity, simulate_realistic
from models.simulator import SimEvent
from schemas.records import Chargeback, Transaction

HOUR = 3_600_000
DAY = 24 * HOUR
# 30 days of a small population, with fraud a little more common so each scenario shows.
CONFIG = RealisticConfig(cards=400, merchants=200, days=30, fraud_share=0.003)


@pytest.fixture(scope="module")
def events() -> list[SimEvent]:
    return list(simulate_realistic(CONFIG))


def _txns(events: list[SimEvent]) -> list[SimEvent]:
    return [e for e in events if e.kind == "transaction"]


def test_same_seed_same_events_other_seed_other_events(events: list[SimEvent]) -> None:
    short = replace(CONFIG, days=2)
    assert list(simulate_realistic(short)) == list(simulate_realistic(short))
    other = [e.payload for e in simulate_realistic(replace(short, seed=8))]
    assert other != [e.payload for e in events[: len(other)]]


def test_every_payload_validates_and_ids_are_unique(events: list[SimEvent]) -> None:
    for e in events:
        model = Transaction if e.kind == "transaction" else Chargeback
        parsed = model.model_validate(e.payload)
        assert parsed.event_time == e.event_time_ms
    ids = [e.payload["event_id"] for e in events]
    assert len(ids) == len(set(ids))


def test_cards_transact_a_few_times_a_day(events: list[SimEvent]) -> None:
    txns = _txns(events)
    per_card_day = len(txns) / CONFIG.cards / CONFIG.days
    assert 2.7 < per_card_day < 3.3
    assert max(e.event_time_ms for e in events) < CONFIG.end_ms
    assert min(e.event_time_ms for e in events) >= CONFIG.start_ms


def test_daily_and_weekly_cycles(events: list[SimEvent]) -> None:
    by_hour = Counter((e.event_time_ms // HOUR) % 24 for e in _txns(events))
    assert by_hour[12] > 5 * by_hour[3]
    by_weekday = Counter((e.event_time_ms // DAY + 3) % 7 for e in _txns(events))
    assert by_weekday[5] > 1.15 * by_weekday[6]  # Saturday over Sunday
    assert activity(replace(CONFIG, daily_cycle=False, weekly_cycle=False), 3 * HOUR) == 1.0


def test_legit_cards_shop_at_home_merchants_and_terminals(events: list[SimEvent]) -> None:
    merchants: dict[str, Counter[str]] = defaultdict(Counter)
    for e in _txns(events):
        if not e.fraud:
            merchants[e.payload["card_id"]][e.payload["merchant_id"]] += 1
            if e.payload["channel"] == "pos":
                assert e.payload["device_id"].startswith("t-")
    at_home = [sum(c for _, c in m.most_common(6)) / sum(m.values()) for m in merchants.values()]
    assert sum(at_home) / len(at_home) > 0.8


def test_fraud_is_rare_and_comes_in_three_scenarios(events: list[SimEvent]) -> None:
    txns = _txns(events)
    fraud = [e for e in txns if e.fraud]
    assert 0.0015 < len(fraud) / len(txns) < 0.005
    assert set(Counter(e.scenario for e in fraud)) == {
        "burst",
        "card_testing",
        "compromised_merchant",
    }
    assert all(e.scenario is None for e in txns if not e.fraud)
    testing = [e for e in fraud if e.scenario == "card_testing"]
    assert sum(e.payload["amount"] <= 2 for e in testing) > len(testing) / 2


def test_chargebacks_come_days_later_for_fraud_only(events: list[SimEvent]) -> None:
    txns = {e.payload["event_id"]: e for e in _txns(events)}
    cbs = [e for e in events if e.kind == "chargeback"]
    assert cbs
    for cb in cbs:
        txn = txns[cb.payload["txn_event_id"]]
        assert txn.fraud
        assert cb.payload["merchant_id"] == txn.payload["merchant_id"]
        delay = cb.event_time_ms - txn.event_time_ms
        assert DAY // 2 <= delay <= CONFIG.max_chargeback_delay_days * DAY


def test_a_compromised_merchants_chargebacks_pile_up(events: list[SimEvent]) -> None:
    txns = {e.payload["event_id"]: e for e in _txns(events)}
    breached = Counter(
        e.payload["merchant_id"] for e in txns.values() if e.scenario == "compromised_merchant"
    )
    merchant, _ = breached.most_common(1)[0]
    cbs = [e for e in events if e.kind == "chargeback" and e.payload["merchant_id"] == merchant]
    seen = sum(e.payload["merchant_id"] == merchant for e in txns.values())
    overall = sum(e.kind == "chargeback" for e in events) / len(txns)
    assert len(cbs) / seen > 10 * overall


def test_events_come_out_in_event_time_order_up_to_the_jitter(events: list[SimEvent]) -> None:
    newest = 0
    for e in _txns(events):
        assert e.event_time_ms >= newest - CONFIG.max_jitter_ms
        newest = max(newest, e.event_time_ms)


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        RealisticConfig(days=0)
    with pytest.raises(ValueError, match="fraud_share"):
        RealisticConfig(fraud_share=0.9)
