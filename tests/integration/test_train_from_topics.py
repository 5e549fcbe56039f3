"""Retraining from recorded topics: read a time range back, label it, train with one command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaProducer

from models.history import Recorded, from_simulation, from_topics
from models.manifest import read_manifest
from models.realistic import RealisticConfig, simulate_realistic
from models.simulator import SimEvent
from models.train import dataset
from operators.card_features import DAY
from operators.watermarks import TimeConfig
from schemas.settings import Settings

pytestmark = pytest.mark.integration

SIM = RealisticConfig(
    cards=500, days=10, fraud_share=0.01, chargeback_delay_days=1.0, max_chargeback_delay_days=2.0
)
# A 500-card population goes quiet for over an hour some nights (docs/training.md).
TIME = TimeConfig(max_future_ms=2 * DAY)
HORIZON = 2 * DAY


def _publish(settings: Settings, events: list[SimEvent]) -> None:
    """Publish as a recorder would: each record stamped with its own event time."""
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    try:
        for e in events:
            topic = (
                settings.topics.transactions
                if e.kind == "transaction"
                else settings.topics.chargebacks
            )
            value = json.dumps(e.payload, separators=(",", ":")).encode()
            producer.send(topic, key=e.key.encode(), value=value, timestamp_ms=e.event_time_ms)
        producer.flush()
    finally:
        producer.close()


def _recorded(settings: Settings, until: int) -> Recorded:
    """The topics' history from the simulation's start to ``until``, as training reads it."""
    return from_topics(
        settings.bootstrap_servers,
        settings.topics,
        since_ms=SIM.start_ms,
        until_ms=until,
        label_horizon_ms=HORIZON,
    )


def test_topics_give_the_rows_and_labels_of_the_recorded_traffic(
    settings: Settings, tmp_path: Path
) -> None:
    events = list(simulate_realistic(SIM))
    _publish(settings, events)
    until = SIM.start_ms + 7 * DAY
    recorded = _recorded(settings, until)
    # Inside the range: every transaction and chargeback; labels: chargebacks to until + 2 d.
    in_range = [e for e in events if e.event_time_ms < until]
    assert sorted(r.value for r in recorded.records) == sorted(
        json.dumps(e.payload, separators=(",", ":")).encode() for e in in_range
    )
    label_cbs = [e for e in events if e.kind == "chargeback" and e.event_time_ms < until + HORIZON]
    assert len(recorded.label_chargebacks) == len(label_cbs)
    assert recorded.labels_through_ms == until + HORIZON
    got = dataset(recorded, time=TIME, label_horizon_ms=HORIZON)
    want = dataset(
        from_simulation(
            [e for e in events if e.kind == "chargeback" or e.event_time_ms < until], "x"
        ),
        time=TIME,
        label_horizon_ms=HORIZON,
    )
    assert sorted(got.cards) == sorted(want.cards)
    assert got.y.sum() == want.y.sum() > 0

    # One command retrains from the topics and writes model, manifest and report.
    env = {**os.environ, "STREAMSCORE_MAX_FUTURE_MS": str(2 * DAY)}
    for name, topic in settings.topics.model_dump().items():
        env[f"STREAMSCORE_TOPICS__{name.upper()}"] = topic
    out = tmp_path / "model"
    done = subprocess.run(
        [
            sys.executable, "-m", "flows.cli", "train",
            "--bootstrap-servers", settings.bootstrap_servers,
            "--from-topics", "--since", "2026-11-23T00:00:00Z", "--until", "2026-11-30T00:00:00Z",
            "--label-horizon-days", "2", "--trees", "20", "--out", str(out),
        ],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    manifest = read_manifest(out)
    assert str(manifest.training["source"]).startswith("kafka:")
    assert manifest.evaluation is not None and manifest.evaluation.test_frauds > 0
    assert (out / "evaluation.png").is_file()
    assert np.isfinite(manifest.metrics["average_precision"])


def test_records_out_of_timestamp_order_at_the_end_of_the_range_are_read(
    settings: Settings,
) -> None:
    # A recorder stamps records with their event times, which arrive a little out of
    # order: a record past --until may come before one inside the range.
    until = SIM.start_ms + DAY
    times = [until - 3_000, until + 1_000, until - 1_000, until + 70_000, until - 500]
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    try:
        for i, t in enumerate(times):
            payload = {
                "event_id": f"t{i}",
                "card_id": "c1",
                "merchant_id": "m1",
                "amount": 1.0,
                "currency": "EUR",
                "event_time": t,
            }
            producer.send(
                settings.topics.transactions,
                value=json.dumps(payload).encode(),
                partition=0,
                timestamp_ms=t,
            )
        producer.flush()
    finally:
        producer.close()
    recorded = _recorded(settings, until)
    # The last one comes after a record 70 s past the range: beyond the flow's bounds.
    assert [r.timestamp_ms for r in recorded.records] == [until - 3_000, until - 1_000]


def test_an_empty_range_is_a_clear_error(settings: Settings) -> None:
    env = {**os.environ}
    for name, topic in settings.topics.model_dump().items():
        env[f"STREAMSCORE_TOPICS__{name.upper()}"] = topic
    done = subprocess.run(
        [
            sys.executable, "-m", "flows.cli", "train",
            "--bootstrap-servers", settings.bootstrap_servers,
            "--from-topics", "--since", "2026-11-23T00:00:00Z", "--until", "2026-11-30T00:00:00Z",
            "--out", "/nonexistent/never-written",
        ],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "no transactions in" in done.stderr
    assert "Traceback" not in done.stderr
