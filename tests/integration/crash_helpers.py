"""Running ``streamscore run`` as a child process with recovery, for the crash tests."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from benchmarks.replay import pipeline_env
from flows.testing import FeatureRow, ReplayRecord, run_log
from models.simulator import SimConfig, simulate
from schemas.settings import Settings
from tests.conftest import ROOT


def flow_env(settings: Settings) -> dict[str, str]:
    """Environment of a child flow: the test's broker, topics and state dir; no metrics port."""
    env = pipeline_env(settings.bootstrap_servers, settings.topics, settings.state_dir)
    env["STREAMSCORE_STARTUP_WAIT_S"] = "120"
    if settings.shards is not None:
        env["STREAMSCORE_SHARDS"] = str(settings.shards)
    return env


def start_flow(
    env: dict[str, str], recovery_dir: Path, log: Path, *args: str
) -> subprocess.Popen[bytes]:
    """``streamscore run --recovery-dir ...`` in the background, its output appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "run", "--recovery-dir", str(recovery_dir), *args],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_until_reading(log: Path, timeout_s: float = 120.0) -> None:
    """Wait until a flow writing to ``log`` has loaded its model and is about to read Kafka.

    On a loaded machine start-up can outlast a test's whole input; a test that
    needs output spread over several epochs publishes only after this.
    """
    deadline = time.monotonic() + timeout_s
    while "reading" not in log.read_text():
        assert time.monotonic() < deadline, f"the flow did not start in {timeout_s:.0f} s"
        time.sleep(0.2)


def simulated_log(seed: int, count: int, *, cards: int = 400) -> list[tuple[bytes, bytes]]:
    """``count`` simulated transactions as (key, value) pairs, in event order."""
    events = (e for e in simulate(SimConfig(seed=seed, cards=cards), count * 3))
    txns = (e for e in events if e.kind == "transaction")
    out = []
    for event, _ in zip(txns, range(count), strict=False):
        out.append((event.key.encode(), json.dumps(event.payload, separators=(",", ":")).encode()))
    return out


def publish_log(
    settings: Settings, log: list[tuple[bytes, bytes]], rate_per_s: float = 0.0
) -> list[ReplayRecord]:
    """Publish to the transactions topic (paced if ``rate_per_s`` > 0); the records as sent."""
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", linger_ms=5)
    started = time.perf_counter()
    futures = []
    try:
        for i, (key, value) in enumerate(log):
            future = producer.send(settings.topics.transactions, key=key, value=value)
            futures.append((key, value, future))
            ahead = (i + 1) / rate_per_s - (time.perf_counter() - started) if rate_per_s else 0
            if ahead > 0.005:
                time.sleep(ahead)
        producer.flush()
        sent = []
        for key, value, future in futures:
            md = future.get(timeout=30)
            sent.append(
                ReplayRecord("transaction", md.partition, md.offset, key, value, md.timestamp)
            )
        return sent
    finally:
        producer.close()


def ingest_order(records: list[ReplayRecord]) -> list[ReplayRecord]:
    """Records in the order the flow applies them: Kafka timestamp, partition, offset."""
    return sorted(records, key=lambda r: (r.timestamp_ms, r.partition, r.offset))


def replayed_rows(sent: list[ReplayRecord]) -> dict[str, FeatureRow]:
    """The rows of one in-process pass (no crash) over what was published, by event_id."""
    return {row.event_id: row for row in run_log(ingest_order(sent), flush=False).rows}


def assert_scored_as_replayed(score: dict[str, Any], row: FeatureRow) -> None:
    """A score's lateness and features equal the in-process run's."""
    assert score["late"] == row.late, score["event_id"]
    got = {name: score["features"][name] for name in row.features}
    assert got == pytest.approx(row.features, rel=1e-12), score["event_id"]
