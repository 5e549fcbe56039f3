"""The end-to-end demo: fresh topics, the flow in a child process, synthetic replay, results.

Consumes the outputs with an independent kafka-python client and prints what
a user wants to see: scores per second, sample scores, dead letters by
reason, and where the metrics are. Always stops the flow it started.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaConsumer

from flows.tooling import ReplayConfig, contract_topics, create_topics, publish, replay_records
from schemas.settings import Settings


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """How much traffic to replay and how long to wait for it."""

    count: int = 5_000
    invalid_share: float = 0.01
    retrain: bool = False
    timeout_s: float = 120.0


def run_demo(settings: Settings, config: DemoConfig) -> int:
    """Run the demo; 0 when every replayed record came out as a score or a dead letter."""
    model_dir = settings.model_dir
    if config.retrain:
        from models.train import TrainConfig, train

        model_dir = Path(".local/models/fraud-gbt-demo")
        print(f"training a model into {model_dir} ...", flush=True)
        train(TrainConfig(), model_dir)
    bootstrap = settings.bootstrap_servers
    print(f"creating topics on {bootstrap} (fresh for this demo) ...", flush=True)
    create_topics(
        bootstrap, contract_topics(settings.topics), settings.topic_partitions, recreate=True
    )

    records = list(
        replay_records(ReplayConfig(count=config.count, invalid_share=config.invalid_share))
    )
    expected_scores = sum(r.expected_reason is None for r in records)
    expected_dead = len(records) - expected_scores

    metrics_url = f"http://{settings.metrics_host}:{settings.metrics_port}/metrics"
    env = {**os.environ, "STREAMSCORE_MODEL_DIR": str(model_dir)}
    cmd = [
        sys.executable,
        "-m",
        "flows.cli",
        "run",
        "--bootstrap-servers",
        bootstrap,
        "--metrics-port",
        str(settings.metrics_port),
        "--metrics-host",
        settings.metrics_host,
    ]
    print(f"starting the flow: {' '.join(cmd[1:])}", flush=True)
    flow = subprocess.Popen(cmd, env=env)
    try:
        _wait_for(metrics_url, flow, 60)
        print(
            f"replaying {len(records)} records ({expected_dead} invalid) into "
            f"{settings.topics.transactions} ...",
            flush=True,
        )
        publish(bootstrap, settings.topics.transactions, records)
        scores, dead, seconds = _collect(settings, expected_scores, expected_dead, config.timeout_s)
        scrape = _scrape(metrics_url)
    finally:
        _stop(flow)

    decisions = collections.Counter(s["decision"] for s in scores)
    reasons = collections.Counter(d["reason"] for d in dead)
    print("\n=== what came out ===")
    print(
        f"scores:       {len(scores)} of {expected_scores} on '{settings.topics.scores}' "
        f"({len(scores) / max(seconds, 1e-9):,.0f} scores/s)"
    )
    print(f"decisions:    {dict(decisions)}")
    print(
        f"dead letters: {len(dead)} of {expected_dead} on '{settings.topics.dead_letters}' "
        f"by reason {dict(reasons)}"
    )
    for s in scores[:3]:
        print("sample score:", json.dumps(s))
    if dead:
        print("sample dead letter:", json.dumps(dead[0]))
    print(f"metrics:      {metrics_url} (served while the flow runs); at the end it said:")
    for line in scrape:
        print("   ", line)
    ok = len(scores) == expected_scores and len(dead) == expected_dead
    print("result:       " + ("every record accounted for" if ok else "MISSING OUTPUT"))
    return 0 if ok else 1


def _wait_for(url: str, flow: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if flow.poll() is not None:
            msg = f"the flow exited with status {flow.returncode} before it was ready"
            raise RuntimeError(msg)
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            time.sleep(0.3)
    msg = f"the flow's metrics endpoint {url} did not answer within {timeout_s} s"
    raise RuntimeError(msg)


def _collect(
    settings: Settings, n_scores: int, n_dead: int, timeout_s: float
) -> tuple[list[dict[str, object]], list[dict[str, object]], float]:
    consumer = KafkaConsumer(
        settings.topics.scores,
        settings.topics.dead_letters,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    scores: list[dict[str, object]] = []
    dead: list[dict[str, object]] = []
    first = last = time.monotonic()
    deadline = time.monotonic() + timeout_s
    try:
        while (len(scores) < n_scores or len(dead) < n_dead) and time.monotonic() < deadline:
            for tp, msgs in consumer.poll(timeout_ms=500).items():
                target = scores if tp.topic == settings.topics.scores else dead
                target.extend(json.loads(m.value) for m in msgs)
                if not scores and not dead:
                    first = time.monotonic()
                last = time.monotonic()
    finally:
        consumer.close()
    return scores, dead, last - first


def _scrape(url: str) -> list[str]:
    wanted = (
        "streamscore_events_in_total",
        "streamscore_scored_total",
        "streamscore_dead_letters_total",
        "streamscore_e2e_latency_seconds_count",
    )
    try:
        text = urllib.request.urlopen(url, timeout=2).read().decode()
    except OSError as exc:
        return [f"(could not scrape: {exc})"]
    return [line for line in text.splitlines() if line.startswith(wanted)]


def _stop(flow: subprocess.Popen[bytes]) -> None:
    if flow.poll() is None:
        flow.send_signal(signal.SIGINT)
        try:
            flow.wait(20)
        except subprocess.TimeoutExpired:
            flow.kill()
            flow.wait()
    print(f"flow stopped (exit status {flow.returncode})", flush=True)
