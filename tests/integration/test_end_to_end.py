"""End to end through the real broker: every record ends as exactly one score or dead letter."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.tooling import ReplayConfig, replay_records
from schemas.records import DeadLetter, Score
from schemas.settings import Settings
from tests.integration.kafka_helpers import produce, read_all, run_flow_to_end

pytestmark = pytest.mark.integration

INVALID: list[tuple[str, bytes | None, bytes | None]] = [
    ("json", b"c-bad-1", b'{"event_id": "tx-x",'),
    ("json", b"c-bad-2", b"\xff\xfe\x00binary"),
    ("json", b"c-bad-3", None),
    ("json", None, b"not json at all"),
    ("schema", b"c-bad-4", b"[1, 2, 3]"),
    (
        "schema",
        b"c-bad-5",
        b'{"event_id": "tx-n", "card_id": "c-1", "merchant_id": "m-1", "amount": -1,'
        b' "currency": "EUR", "event_time": "2026-11-23T10:00:00Z"}',
    ),
    (
        "schema",
        b"c-bad-6",
        b'{"event_id": "tx-t", "card_id": "c-1", "merchant_id": "m-1", "amount": 1,'
        b' "currency": "EUR", "event_time": "2026-11-23T10:00:00"}',
    ),
    ("oversize", b"c-bad-7", b'{"pad": "' + b"x" * 70_000 + b'"}'),
]


def _valid(n: int) -> list[tuple[bytes | None, bytes]]:
    return [
        (r.key, r.value) for r in replay_records(ReplayConfig(count=n)) if r.expected_reason is None
    ]


def test_n_valid_and_m_invalid_give_n_scores_and_m_dead_letters(settings: Settings) -> None:
    valid = _valid(400)
    # Invalid records are interleaved with valid ones, not appended at the end.
    records: list[tuple[bytes | None, bytes | None]] = list(valid)
    for i, (_, key, value) in enumerate(INVALID):
        records.insert(i * 37 + 5, (key, value))
    coords = produce(settings.bootstrap_servers, settings.topics.transactions, records)
    by_coords = dict(zip(coords, records, strict=True))

    models, _ = run_flow_to_end(settings)
    model = models.active

    scores = read_all(settings.bootstrap_servers, settings.topics.scores, expect=len(valid))
    dead = read_all(settings.bootstrap_servers, settings.topics.dead_letters, expect=len(INVALID))

    sent_ids = [json.loads(v)["event_id"] for _, v in valid]
    assert sorted(s["event_id"] for s in scores) == sorted(sent_ids)
    thresholds = model.manifest.thresholds
    for s in scores:
        key = s.pop("_key")
        score = Score.model_validate(s)
        assert key == score.card_id
        assert score.decision == thresholds.decide(score.score)
        assert score.model_version == "fraud-gbt-1"
        assert set(model.manifest.feature_names) <= set(score.features)

    assert len(dead) == len(INVALID)
    expected = {
        (p, o): (reason, key, value)
        for (p, o), (key, value) in by_coords.items()
        for reason, k, v in INVALID
        if (k, v) == (key, value)
    }
    for d in dead:
        key = d.pop("_key")
        letter = DeadLetter.model_validate(d)
        reason, orig_key, orig_value = expected.pop((letter.partition, letter.offset))
        assert letter.reason == reason
        assert letter.topic == settings.topics.transactions
        assert letter.key == (None if orig_key is None else orig_key.decode())
        assert key == letter.key
        if letter.payload_encoding == "utf-8" and reason != "oversize":
            assert letter.payload == (orig_value or b"").decode()
    assert expected == {}

    for topic in (settings.topics.window_aggregates, settings.topics.drift):
        assert read_all(settings.bootstrap_servers, topic, timeout_s=2) == []


def _env(settings: Settings) -> dict[str, str]:
    env = {**os.environ, "STREAMSCORE_BOOTSTRAP_SERVERS": settings.bootstrap_servers}
    for name, topic in settings.topics.model_dump().items():
        env[f"STREAMSCORE_TOPICS__{name.upper()}"] = topic
    env["STREAMSCORE_METRICS_PORT"] = "0"
    return env


def test_cli_run_until_eof(settings: Settings) -> None:
    valid = _valid(50)
    produce(settings.bootstrap_servers, settings.topics.transactions, valid)
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--until-eof"],
        env=_env(settings),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    scores = read_all(settings.bootstrap_servers, settings.topics.scores, expect=len(valid))
    assert len(scores) == len(valid)


def test_bytewax_run_entry_point_stops_cleanly_on_sigterm(settings: Settings) -> None:
    valid = _valid(50)
    produce(settings.bootstrap_servers, settings.topics.transactions, valid)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bytewax.run", "flows.main:get_flow()"],
        env=_env(settings),
        cwd=Path(__file__).resolve().parents[2],
        stderr=subprocess.PIPE,
    )
    try:
        scores = read_all(
            settings.bootstrap_servers, settings.topics.scores, expect=len(valid), timeout_s=60
        )
        assert len(scores) == len(valid)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err.decode()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
