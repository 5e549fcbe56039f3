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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer

from flows.tooling import ReplayConfig, contract_topics, create_topics, publish, replay_records
from models.simulator import SimConfig
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
        from models.history import from_simulation
        from models.realistic import RealisticConfig, simulate_realistic
        from models.train import TrainConfig, train
        from operators.card_features import DAY

        model_dir = Path(".local/models/fraud-gbt-demo")
        print(f"training a model into {model_dir} ...", flush=True)
        # A small realistic history with prompt chargebacks, so the demo trains in
        # about a minute; `streamscore train` trains on weeks of it.
        sim = RealisticConfig(
            cards=1_500, days=12, chargeback_delay_days=1.0, max_chargeback_delay_days=3.0
        )
        recorded = from_simulation(simulate_realistic(sim), "realistic-sim:demo")
        train(TrainConfig(label_horizon_ms=3 * DAY), model_dir, recorded)
    bootstrap = settings.bootstrap_servers
    print(f"creating topics on {bootstrap} (fresh for this demo) ...", flush=True)
    create_topics(
        bootstrap, contract_topics(settings.topics), settings.topic_partitions, recreate=True
    )

    # 5 simulated events per second of event time: 5,000 transactions span about
    # 17 minutes of event time, so several 5-minute windows close during the demo.
    replay = ReplayConfig(
        count=config.count,
        sim=SimConfig(events_per_second=5.0),
        invalid_share=config.invalid_share,
        chargebacks=True,
    )
    records = list(replay_records(replay))
    expected = {
        "scores": sum(r.expected_reason is None and r.kind == "transaction" for r in records),
        "dead": sum(r.expected_reason is not None for r in records),
    }
    n_chargebacks = sum(r.kind == "chargeback" for r in records)

    metrics_url = f"http://{settings.metrics_host}:{settings.metrics_port}/metrics"
    env = {**os.environ, "STREAMSCORE_MODEL_DIR": str(model_dir)}
    cmd = [sys.executable, "-m", "flows.cli", "run", "--bootstrap-servers", bootstrap]
    cmd += ["--metrics-port", str(settings.metrics_port), "--metrics-host", settings.metrics_host]
    print(f"starting the flow: {' '.join(cmd[1:])}", flush=True)
    flow = subprocess.Popen(cmd, env=env)
    try:
        # /readyz: the model is loaded and the flow consumes (/metrics answers before).
        _wait_for(metrics_url.removesuffix("/metrics") + "/readyz", flow, 60)
        print(
            f"replaying {len(records)} records ({expected['dead']} invalid, {n_chargebacks} "
            f"chargebacks) into '{settings.topics.transactions}' and "
            f"'{settings.topics.chargebacks}' ...",
            flush=True,
        )
        publish(bootstrap, settings.topics, records)
        out = _collect(settings, expected, config.timeout_s)
        scrape = _scrape(metrics_url)
    finally:
        _stop(flow)

    scores, dead, aggregates = out.scores, out.dead, out.aggregates
    decisions = collections.Counter(s["decision"] for s in scores)
    reasons = collections.Counter(d["reason"] for d in dead)
    print("\n=== what came out ===")
    print(
        f"scores:       {len(scores)} of {expected['scores']} on '{settings.topics.scores}' "
        f"({len(scores) / max(out.seconds, 1e-9):,.0f} scores/s from first to last)"
    )
    print(f"decisions:    {dict(decisions)}")
    print(
        f"dead letters: {len(dead)} of {expected['dead']} on '{settings.topics.dead_letters}' "
        f"by reason {dict(reasons)}"
    )
    print(
        f"windows:      {len(aggregates)} closed 5-minute merchant windows on "
        f"'{settings.topics.window_aggregates}'"
    )
    busiest = max(scores, key=lambda s: float(s["features"]["card_count_1h"]), default=None)
    for s in [*scores[:2], *([busiest] if busiest else [])]:
        print("sample score:", json.dumps(s))
    if dead:
        print("sample dead letter:", json.dumps(dead[0]))
    if aggregates:
        print("sample window:", json.dumps(aggregates[0]))
    print(f"metrics:      {metrics_url} (served while the flow runs); at the end it said:")
    for line in scrape:
        print("   ", line)
    ok = len(scores) == expected["scores"] and len(dead) == expected["dead"]
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
    msg = f"the flow's {url} did not answer 200 within {timeout_s} s"
    raise RuntimeError(msg)


@dataclass
class _Output:
    scores: list[dict[str, Any]] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)
    aggregates: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def _collect(settings: Settings, expected: dict[str, int], timeout_s: float) -> _Output:
    """Read the outputs until every score and dead letter is in and windows stop closing."""
    topics = settings.topics
    consumer = KafkaConsumer(
        topics.scores,
        topics.dead_letters,
        topics.window_aggregates,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    out = _Output()
    target = {topics.scores: out.scores, topics.dead_letters: out.dead}
    target[topics.window_aggregates] = out.aggregates
    first: float | None = None
    last = quiet_since = time.monotonic()
    deadline = time.monotonic() + timeout_s
    # Windows close once idle partitions drop out of the watermark (idle timeout).
    linger = settings.idle_timeout_ms / 1000 + 5
    try:
        while time.monotonic() < deadline:
            done = len(out.scores) >= expected["scores"] and len(out.dead) >= expected["dead"]
            if done and time.monotonic() - quiet_since > linger:
                break
            for tp, msgs in consumer.poll(timeout_ms=500).items():
                target[tp.topic].extend(json.loads(m.value) for m in msgs)
                if tp.topic == topics.scores:
                    first = first or time.monotonic()
                    last = time.monotonic()
                if tp.topic == topics.window_aggregates or not done:
                    quiet_since = time.monotonic()
    finally:
        consumer.close()
    out.seconds = last - (first or last)
    return out


def _scrape(url: str) -> list[str]:
    wanted = (
        "streamscore_events_in_total",
        "streamscore_scored_total",
        "streamscore_chargebacks_total",
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
