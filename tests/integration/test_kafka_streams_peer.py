"""The bench's Kafka Streams peer, built by its script, against the real broker.

The first build on a machine fetches the pinned jars with Maven (bounded by
``jvm_peer.BUILD_TIMEOUT_S``); later ones find them cached.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from benchmarks import jvm_peer
from benchmarks.kafka_load import create_topics, preload
from benchmarks.replay import peer_command, peer_flags
from tests.integration.kafka_helpers import read_all

pytestmark = pytest.mark.integration

WINDOW_MS = 5 * 60 * 1000


@pytest.fixture(scope="module")
def built() -> Path:
    """The peer's class folder (built once a module; cached across runs)."""
    return jvm_peer.build()


def _run_peer(
    bootstrap: str, topic: str, out_topic: str, events: int, tmp_path: Path, max_seconds: float
) -> tuple[dict[str, Any], float]:
    flags = peer_flags(
        bootstrap=bootstrap,
        topic=topic,
        out_topic=out_topic,
        events=events,
        max_seconds=max_seconds,
        group=f"test-ks-{uuid.uuid4().hex[:8]}",
        state_dir=tmp_path / "ks-state",
    )
    started = time.time()
    done = subprocess.run(
        peer_command("kafka-streams", flags),
        capture_output=True,
        text=True,
        timeout=max_seconds + 60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stdout + done.stderr[-3000:]
    result: dict[str, Any] = json.loads(lines[-1])
    return result, started


def _topics(bootstrap: str, throwaway: list[str]) -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    names = (f"ks-peer-in-{suffix}", f"ks-peer-out-{suffix}")
    throwaway.extend(names)
    create_topics(bootstrap, names, 1)  # one partition: one stream time, closing is exact
    return names


def _txn(card: str, amount: float, t: int) -> tuple[bytes, bytes, int]:
    value = {"event_id": f"e-{card}-{t}", "card_id": card, "amount": amount, "event_time": t}
    return card.encode(), json.dumps(value).encode(), t


def test_peer_counts_and_sums_closed_tumbling_windows_per_card(
    built: Path, kafka_bootstrap: str, throwaway_topics: list[str], tmp_path: Path
) -> None:
    assert (built / "CountSumPeer.class").is_file()
    topic, out_topic = _topics(kafka_bootstrap, throwaway_topics)
    # Recent, window-aligned event times (the broker keeps a day).
    w0 = (int(time.time() * 1000) - 3_600_000) // WINDOW_MS * WINDOW_MS
    w1, w2 = w0 + WINDOW_MS, w0 + 2 * WINDOW_MS
    records = [
        _txn("a", 10.0, w0 + 1_000),
        _txn("b", 1.5, w0 + 2_000),
        _txn("a", 5.0, w0 + 299_000),
        _txn("a", 2.0, w1 + 10),  # stream time passes w1 + 5 s: window 0 closes
        _txn("b", 4.0, w1 + 6_000),
        _txn("a", 100.0, w0 + 50_000),  # late past the 5 s grace: dropped, as by Quix
        _txn("b", 0.5, w2 + 6_000),  # closes window 1
    ]
    assert preload(kafka_bootstrap, topic, records) == len(records)

    result, started = _run_peer(
        kafka_bootstrap, topic, out_topic, len(records), tmp_path, max_seconds=90
    )

    assert result["events"] == len(records)
    assert result["steady_events"] == len(records) - 1
    assert started <= result["first"] <= result["last"] <= time.time()
    windows = read_all(kafka_bootstrap, out_topic, expect=4, timeout_s=30)
    got = {(w["_key"], w["start"], w["end"], w["count"], w["amount_sum"]) for w in windows}
    assert got == {
        ("a", w0, w1, 2, 15.0),
        ("b", w0, w1, 1, 1.5),
        ("a", w1, w2, 1, 2.0),
        ("b", w1, w2, 1, 4.0),
    }
    assert len(windows) == 4  # each window once, when it closed


def test_peer_reports_what_it_did_when_the_input_runs_short(
    built: Path, kafka_bootstrap: str, throwaway_topics: list[str], tmp_path: Path
) -> None:
    topic, out_topic = _topics(kafka_bootstrap, throwaway_topics)
    t = int(time.time() * 1000) - 60_000
    assert preload(kafka_bootstrap, topic, [_txn("c", 1.0, t + i) for i in range(5)]) == 5

    result, started = _run_peer(kafka_bootstrap, topic, out_topic, 50, tmp_path, max_seconds=8)

    assert result["events"] == 5 and result["steady_events"] == 4
    # The span ends at the last record seen, not when the time limit stopped the peer.
    assert started <= result["first"] <= result["last"] < started + 8
