"""A breached merchant shows in the quality records: its chargebacks label the breach days."""

from __future__ import annotations

from flows.testing import run_log
from models.history import from_simulation
from models.manifest import Thresholds
from models.realistic import RealisticConfig, simulate_realistic
from models.rules import rules_score
from operators.card_features import DAY
from operators.quality import QualityAggregator, QualityConfig, QualityEngine, QualityRecord
from operators.watermarks import TimeConfig
from schemas.records import Chargeback
from schemas.timefmt import parse_event_time
from state.memory import MemoryStore

# Breaches only: every labelled transaction comes from the breached merchant.
SIM = RealisticConfig(
    cards=600,
    merchants=150,
    days=10,
    fraud_share=0.004,
    scenario_weights=(0.0, 0.0, 1.0),
    days_per_breach=10,
    chargeback_delay_days=1.0,
    max_chargeback_delay_days=2.0,
)
QUALITY = QualityConfig(topic="quality", window_ms=DAY, label_horizon_ms=3 * DAY)


def test_a_compromised_merchant_shows_up_in_the_quality_records() -> None:
    events = list(simulate_realistic(SIM))
    breach = sorted(e.event_time_ms for e in events if e.scenario == "compromised_merchant")
    assert breach
    recorded = from_simulation(events, "test")
    rows = run_log(recorded.records, time=TimeConfig(max_future_ms=2 * DAY)).rows
    thresholds = Thresholds(review=0.3, decline=0.7)

    # The service's quality path, in event-time order: decisions as transactions are
    # scored (by the rules fallback here), chargebacks as they arrive, the watermark on.
    steps: list[tuple[int, str, str, str]] = []
    for row in rows:
        if not row.late:
            score = rules_score(row.features)
            steps.append((row.event_time, "d", row.event_id, thresholds.decide(score)))
    for value in recorded.label_chargebacks:
        cb = Chargeback.model_validate_json(value)
        steps.append((cb.event_time, "c", cb.txn_event_id, ""))
    engine = QualityEngine(QUALITY, MemoryStore())
    aggregator = QualityAggregator(QUALITY, ["s0"])
    records: list[QualityRecord] = []
    for t, kind, event_id, decision in sorted(steps):
        if kind == "d":
            engine.decisions([(event_id, t, decision)])
        else:
            engine.chargebacks([event_id])
        records.extend(aggregator.add("s0", *engine.advance(t - 5_000)))

    assert records
    labelled_days = {parse_event_time(r["window_start"]) for r in records if r["labelled"] > 0}
    breach_days = {t - t % DAY for t in breach}
    final_days = {parse_event_time(r["window_start"]) for r in records}
    # Labels show up exactly on the breach's days (those already final), nowhere else.
    assert labelled_days == breach_days & final_days
    assert labelled_days
    quiet = [r for r in records if parse_event_time(r["window_start"]) not in breach_days]
    assert quiet and all(r["labelled"] == 0 for r in quiet)
