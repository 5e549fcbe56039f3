"""Delayed labels through the broker: chargebacks join scored decisions into precision/recall."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from flows.tooling import ReplayConfig, replay_records
from models.simulator import SimConfig
from schemas.settings import Settings
from schemas.timefmt import format_ms, parse_event_time
from tests.integration.kafka_helpers import produce, read_all

pytestmark = pytest.mark.integration

WINDOW = 60_000
HORIZON = 1_200_000  # longer than the replay spans: no window is final before the labels


def test_quality_records_match_a_recomputation(settings: Settings) -> None:
    records = list(
        replay_records(
            ReplayConfig(count=5_000, sim=SimConfig(seed=21, events_per_second=5), chargebacks=True)
        )
    )
    txns = [(r.key, r.value) for r in records if r.kind == "transaction"]
    cbs = [(r.key, r.value) for r in records if r.kind == "chargeback"]
    last = max(json.loads(v)["event_time"] for _, v in txns)
    env = {**os.environ, "STREAMSCORE_BOOTSTRAP_SERVERS": settings.bootstrap_servers}
    for name, topic in settings.topics.model_dump().items():
        env[f"STREAMSCORE_TOPICS__{name.upper()}"] = topic
    env.update(
        STREAMSCORE_METRICS_PORT="0",
        STREAMSCORE_STATE_DIR=str(settings.state_dir),
        STREAMSCORE_IDLE_TIMEOUT_MS="1000",
        STREAMSCORE_QUALITY_WINDOW_MS=str(WINDOW),
        STREAMSCORE_LABEL_HORIZON_MS=str(HORIZON),
    )
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "run"], env=env)
    try:
        produce(settings.bootstrap_servers, settings.topics.transactions, txns)
        scores = read_all(
            settings.bootstrap_servers, settings.topics.scores, expect=len(txns), timeout_s=90
        )
        assert len(scores) == len(txns)
        # Labels arrive after the decisions, as chargebacks do.
        produce(settings.bootstrap_servers, settings.topics.chargebacks, cbs)
        # Then event time moves on, so the windows and their label horizons pass.
        clock = {
            "event_id": "clock",
            "card_id": "c-clock",
            "merchant_id": "m-clock",
            "amount": 1.0,
            "currency": "EUR",
            "event_time": format_ms(parse_event_time(last) + 2 * HORIZON),
        }
        # Two records: a partition's watermark follows a time two records agree on.
        produce(
            settings.bootstrap_servers,
            settings.topics.transactions,
            [(b"c", json.dumps({**clock, "event_id": f"clock-{i}"}).encode()) for i in (1, 2)],
        )
        quality = read_all(
            settings.bootstrap_servers, settings.topics.quality, expect=5, timeout_s=60
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert proc.returncode == 0
    assert len(quality) >= 5

    labelled = {json.loads(v)["txn_event_id"] for _, v in cbs}
    for record in quality:
        start = parse_event_time(record["window_start"])
        inside = [
            s
            for s in scores
            if not s["late"] and start <= parse_event_time(s["event_time"]) < start + WINDOW
        ]
        declined = {s["event_id"] for s in inside if s["decision"] == "decline"}
        with_label = {s["event_id"] for s in inside} & labelled
        assert record["scored"] == len(inside)
        assert record["declined"] == len(declined)
        assert record["labelled"] == len(with_label)
        assert record["true_positives"] == len(declined & with_label)
        if declined:
            assert record["decline_precision"] == len(declined & with_label) / len(declined)
    assert sum(r["labelled"] for r in quality) > 0
    assert sum(r["true_positives"] for r in quality) > 0
