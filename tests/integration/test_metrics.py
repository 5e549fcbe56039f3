"""Scrape the metrics endpoint during a run: counters add up, histograms and gauges are set."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flows.tooling import INVALID_SAMPLES, ReplayConfig, replay_records
from schemas.records import Drift
from schemas.settings import Settings
from tests.integration.kafka_helpers import free_port, produce, read_all

pytestmark = pytest.mark.integration


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def _total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def test_metrics_add_up_during_a_run(settings: Settings) -> None:
    valid: list[tuple[bytes | None, bytes]] = [
        (r.key, r.value)
        for r in replay_records(ReplayConfig(count=700))
        if r.kind == "transaction" and r.expected_reason is None
    ]
    key: bytes | None = b"k"
    invalid = [(key, v) for _, v in INVALID_SAMPLES] * 3
    produce(settings.bootstrap_servers, settings.topics.transactions, valid + invalid)

    port = free_port()
    env = {**os.environ, "STREAMSCORE_BOOTSTRAP_SERVERS": settings.bootstrap_servers}
    for name, topic in settings.topics.model_dump().items():
        env[f"STREAMSCORE_TOPICS__{name.upper()}"] = topic
    env.update(
        STREAMSCORE_METRICS_PORT=str(port),
        STREAMSCORE_STATE_DIR=str(settings.state_dir),
        STREAMSCORE_DRIFT_EVERY_EVENTS="500",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "run"], env=env, stderr=subprocess.PIPE
    )
    try:
        scores = read_all(
            settings.bootstrap_servers, settings.topics.scores, expect=len(valid), timeout_s=60
        )
        assert len(scores) == len(valid)
        deadline = time.monotonic() + 20
        while True:
            samples = _scrape(port)
            handled = _total(samples, "streamscore_scored_total") + _total(
                samples, "streamscore_dead_letters_total"
            )
            lag_reported = any(n == "streamscore_consumer_lag" for n, _ in samples)
            done = handled >= len(valid) + len(invalid) and lag_reported
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-2000:]

    events_in = samples[("streamscore_events_in_total", (("topic", settings.topics.transactions),))]
    scored = _total(samples, "streamscore_scored_total")
    dead = _total(samples, "streamscore_dead_letters_total")
    assert events_in == len(valid) + len(invalid)
    assert events_in == scored + dead
    assert dead == len(invalid)
    assert samples[("streamscore_e2e_latency_seconds_count", ())] == scored
    assert samples[("streamscore_inference_latency_seconds_count", ())] > 0
    assert _total(samples, "streamscore_score_batch_size_sum") == scored
    active = (("model_version", "fraud-gbt-1"), ("role", "active"))
    assert samples[("streamscore_model_info", active)] == 1
    lags = [k for k in samples if k[0] == "streamscore_consumer_lag"]
    assert lags and all(samples[k] >= 0 for k in lags)
    assert ("streamscore_drift_psi", (("signal", "score"),)) in samples
    assert samples[("process_resident_memory_bytes", ())] > 0
    assert samples[("streamscore_gc_tenured_objects", ())] > 0  # the tenure thread runs

    drift = read_all(settings.bootstrap_servers, settings.topics.drift, timeout_s=5)
    assert drift, "one drift emission per signal after 500 scored events"
    for record in drift:
        record.pop("_key")
        Drift.model_validate(record)
