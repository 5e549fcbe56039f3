"""Exactly-once delivery on the real broker, checked by independent kafka-python consumers.

``streamscore run --delivery exactly-once`` runs as a child process with
recovery. Every check reads the outputs with ``isolation_level=read_committed``
(what a consumer that never deduplicates uses) and compares them with the
in-process run of the same log (``flows.testing``):

- ten ``kill -9`` at seeded random moments while paced input with invalid
  records and duplicates runs: every valid event scored once, every dead
  letter once, every window aggregate once, drift records once per emission,
  and the aborted transactions the kills left behind are visible to
  ``read_uncommitted`` only;
- a zombie (a second process with the same process index) fences the first
  one, and nothing is written twice;
- the broker stopped for 30 s mid-epoch: nothing lost, nothing twice;
- the consumer group ``streamscore-<flow>`` shows the service's offsets and
  lag in the broker's own tool.

``CRASH_SEED=<n>`` replays a failure of the kill test.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from flows.testing import ReplayRecord, run_log
from flows.tooling import contract_topics, create_topics
from models.simulator import SimConfig, simulate
from operators.exactly_once import commit_topic
from schemas.settings import Settings
from tests.conftest import ROOT
from tests.integration.crash_helpers import (
    flow_env,
    ingest_order,
    publish_log,
    simulated_log,
    start_flow,
    wait_until_reading,
)
from tests.integration.kafka_helpers import OwnBroker, produce, run_flow_to_end

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("CRASH_SEED", "20261206"))
KILLS = 10
TRANSACTIONS = 4_000
PRODUCE_RATE = 100.0  # records/s: production (about 40 s) spans most of the kill phase
KILL_AFTER_OUTPUT_S = (0.0, 1.5)
OUTPUT_WAIT_S = 30.0
IDLE_KILL_AFTER_S = 6.0
EPOCH = ("--epoch-interval", "0.5")
BROKER_DOWN_S = float(os.environ.get("EOS_BROKER_DOWN_S", "30"))
INVALID = (
    b'{"event_id": "broken",',
    b'{"event_id": "x", "card_id": "c-1", "merchant_id": "m-1", "amount": -5,'
    b' "currency": "EUR", "event_time": "2026-11-23T10:00:00Z"}',
)


def _exactly_once(settings: Settings, throwaway: list[str]) -> tuple[Settings, dict[str, str]]:
    """Settings and child env of an exactly-once flow with a flow name of its own."""
    flow = f"eos-{uuid.uuid4().hex[:10]}"
    throwaway.append(commit_topic(flow))
    settings = settings.model_copy(update={"flow_name": flow, "delivery": "exactly-once"})
    env = {
        **flow_env(settings),
        "STREAMSCORE_FLOW_NAME": flow,
        "STREAMSCORE_DELIVERY": "exactly-once",
    }
    return settings, env


def _log(rng: random.Random, count: int) -> list[tuple[bytes, bytes]]:
    """Simulated transactions with invalid records and re-sent duplicates mixed in.

    Slow in event time (5 events a second), so 5-minute windows close during the run.
    """
    sim = SimConfig(seed=SEED % 1000, cards=400, events_per_second=5.0)
    txns = (e for e in simulate(sim, count * 3) if e.kind == "transaction")
    out: list[tuple[bytes, bytes]] = []
    for event, _ in zip(txns, range(count), strict=False):
        key = event.key.encode()
        value = json.dumps(event.payload, separators=(",", ":")).encode()
        out.append((key, value))
        roll = rng.random()
        if roll < 0.01:
            out.append((key, INVALID[rng.randrange(len(INVALID))]))
        elif roll < 0.02:
            out.append((key, value))  # a duplicate: same card, same event_id
    return out


def read_records(
    bootstrap: str, topic: str, *, isolation: str = "read_committed", timeout_s: float = 60
) -> list[dict[str, Any]]:
    """Every record of ``topic`` visible at ``isolation``, read to the end, as parsed JSON."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level=isolation
    )
    try:
        parts = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        while not all(consumer.position(p) >= end[p] for p in parts):
            assert time.monotonic() < deadline, f"{topic} not read to its end in {timeout_s} s"
            for batch in consumer.poll(timeout_ms=200).values():
                out.extend(json.loads(m.value) for m in batch)
        return out
    finally:
        consumer.close()


def _wait_committed(bootstrap: str, topic: str, count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while len(read_records(bootstrap, topic)) < count:
        assert time.monotonic() < deadline, f"{count} committed records not on {topic} in time"
        time.sleep(0.5)


def _assert_scored_once(settings: Settings, sent: list[ReplayRecord]) -> None:
    """Every valid transaction scored exactly once; dead letters exactly once."""
    expected = run_log(ingest_order(sent), flush=False)
    scored = read_records(settings.bootstrap_servers, settings.topics.scores)
    scores = Counter(s["event_id"] for s in scored)
    assert set(scores) == {row.event_id for row in expected.rows}
    assert max(scores.values()) == 1, [k for k, n in scores.items() if n > 1][:5]
    dead = read_records(settings.bootstrap_servers, settings.topics.dead_letters)
    got_dead = Counter((d["partition"], d["offset"], d["reason"]) for d in dead)
    assert set(got_dead) == {
        (d["partition"], d["offset"], d["reason"]) for d in expected.dead_letters
    }
    assert max(got_dead.values(), default=1) == 1


def _drift_report(drift: list[dict[str, Any]], logs: Path) -> str:
    """What a failed drift count needs to be understood: each emission's records, and the
    flow's restarts, rollbacks and dropped replays."""
    emissions = Counter((d["window_end"], d["window_start"], d["n"]) for d in drift)
    lines = [
        f"{n} record(s): window {start}..{end}, n={size}"
        for (end, start, size), n in sorted(emissions.items())
    ]
    marks = ("resuming", "rolled RocksDB back", "deleted", "dropped", "committed before")
    events = [line[:220] for line in logs.read_text().splitlines() if any(m in line for m in marks)]
    return "\n".join(["drift emissions:", *lines, "flow log:", *events])


@pytest.mark.parametrize("seed", [SEED], ids=lambda s: f"seed={s}")
def test_kill_9_ten_times_commits_every_output_exactly_once(
    settings: Settings, tmp_path: Path, throwaway_topics: list[str], seed: int
) -> None:
    rng = random.Random(seed)
    log = _log(rng, TRANSACTIONS)
    settings, env = _exactly_once(settings.model_copy(update={"shards": 4}), throwaway_topics)
    recovery, logs = tmp_path / "recovery", tmp_path / "flow.log"
    sent: list[ReplayRecord] = []
    producer = threading.Thread(
        target=lambda: sent.extend(publish_log(settings, log, PRODUCE_RATE))
    )
    producer.start()
    scores = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    parts = [TopicPartition(settings.topics.scores, p) for p in range(settings.topic_partitions)]
    try:
        for _ in range(KILLS):
            # Written, committed or not: the end offsets move as soon as records are written.
            before = sum(scores.end_offsets(parts).values())
            flow = start_flow(env, recovery, logs, *EPOCH)
            # With the input all read there may be nothing new to score: then any moment
            # after startup will do.
            wait_s = OUTPUT_WAIT_S if producer.is_alive() else IDLE_KILL_AFTER_S
            deadline = time.monotonic() + wait_s
            while sum(scores.end_offsets(parts).values()) == before:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            time.sleep(rng.uniform(*KILL_AFTER_OUTPUT_S))
            assert flow.poll() is None, logs.read_text()[-3000:]
            flow.send_signal(signal.SIGKILL)
            flow.wait()
    finally:
        scores.close()
        producer.join()
    final = start_flow(env, recovery, logs, *EPOCH, "--until-eof")
    assert final.wait(timeout=240) == 0, logs.read_text()[-3000:]
    text = logs.read_text()
    assert text.count("resuming from the recovery store") >= KILLS // 2

    bootstrap = settings.bootstrap_servers
    expected = run_log(ingest_order(sent), flush=False)
    _assert_scored_once(settings, sent)
    # The kills left open transactions behind, aborted at the next start: their records
    # are in the log (read_uncommitted sees them) but never visible as committed.
    uncommitted = read_records(bootstrap, settings.topics.scores, isolation="read_uncommitted")
    assert len(uncommitted) > len(expected.rows), "no aborted transaction to check"

    aggregates = read_records(bootstrap, settings.topics.window_aggregates)
    windows = Counter((a["merchant_id"], a["window_start"]) for a in aggregates)
    assert max(windows.values()) == 1
    assert sorted(json.dumps(a, sort_keys=True) for a in aggregates) == sorted(
        json.dumps(a, sort_keys=True) for a in expected.window_aggregates
    )
    # One drift record per signal per emission (every 500 scored transactions), none twice.
    drift = read_records(bootstrap, settings.topics.drift)
    signals = len({d["signal"] for d in drift})
    emissions = len(expected.rows) // settings.drift_every_events
    assert len(drift) == signals * emissions, _drift_report(drift, logs)

    # The source offsets went into the transactions: the group is at the input's end.
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets(settings.consumer_group)[settings.consumer_group]
    finally:
        admin.close()
    committed = {tp.partition: meta.offset for tp, meta in offsets.items()}
    ends = Counter[int]()
    for record in sent:
        ends[record.partition] = max(ends[record.partition], record.offset + 1)
    assert committed == dict(ends)


def test_a_crash_right_after_the_kafka_commit_replays_nothing_twice(
    settings: Settings, tmp_path: Path, throwaway_topics: list[str]
) -> None:
    """The epoch is committed in Kafka but not in bytewax's recovery store: it is replayed."""
    settings, env = _exactly_once(settings, throwaway_topics)
    recovery, log = tmp_path / "recovery", tmp_path / "flow.log"
    with log.open("ab") as out:
        child = subprocess.Popen(
            [
                *(sys.executable, "-m", "tests.integration.eos_crash_child", "run"),
                *("--recovery-dir", str(recovery), "--epoch-interval", "0.3"),
            ],
            env={**env, "EOS_EXIT_AFTER_COMMITS": "3"},
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # Paced, once the child reads, so that output comes in several epochs and the
        # crash lands mid-stream (on a loaded machine start-up can outlast unpaced input).
        wait_until_reading(log)
        sent = publish_log(settings, simulated_log(54, 3_000), rate_per_s=500)
        assert child.wait(timeout=120) == 137, log.read_text()[-3000:]
    finally:
        if child.poll() is None:  # failed: leave no process behind for the next tests
            child.kill()
            child.wait()
    final = start_flow(env, recovery, log, *EPOCH, "--until-eof")
    assert final.wait(timeout=120) == 0, log.read_text()[-3000:]
    assert "re-emitted message(s) committed before this start" in log.read_text()
    _assert_scored_once(settings, sent)


def test_a_zombie_with_the_same_process_index_is_fenced(
    settings: Settings, tmp_path: Path, throwaway_topics: list[str]
) -> None:
    settings, env = _exactly_once(settings, throwaway_topics)
    records = simulated_log(51, 3_000)
    sent = publish_log(settings, records[:1_500])
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = start_flow(env, tmp_path / "recovery-1", first_log, *EPOCH)
    try:
        _wait_committed(settings.bootstrap_servers, settings.topics.scores, 1_500, 90)
        # The same process index on other state (a failover host): it starts from the
        # beginning of the input, fences the first one and drops what it had committed.
        second_env = {**env, "STREAMSCORE_STATE_DIR": str(tmp_path / "state-2")}
        second = start_flow(second_env, tmp_path / "recovery-2", second_log, *EPOCH)
        try:
            deadline = time.monotonic() + 90
            while "transactional id" not in second_log.read_text():
                assert time.monotonic() < deadline, second_log.read_text()[-3000:]
                assert second.poll() is None, second_log.read_text()[-3000:]
                time.sleep(0.2)
            sent += publish_log(settings, records[1_500:], rate_per_s=1_000)
            # The first one learns it is fenced at its next transaction and stops.
            assert first.wait(timeout=60) != 0
            assert "this one is fenced and stops" in first_log.read_text()
            _wait_committed(settings.bootstrap_servers, settings.topics.scores, 3_000, 90)
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=60) == 0, second_log.read_text()[-3000:]
        finally:
            if second.poll() is None:
                second.kill()
    finally:
        if first.poll() is None:
            first.kill()
    assert "dropped" in second_log.read_text()
    _assert_scored_once(settings, sent)


def test_broker_stopped_for_30_s_mid_epoch_commits_nothing_twice(
    settings: Settings, tmp_path: Path, throwaway_topics: list[str]
) -> None:
    """A broker of its own, stopped while the flow has an epoch's transaction open."""
    broker = OwnBroker(tmp_path / "kafka")
    broker.start()
    try:
        settings = settings.model_copy(update={"bootstrap_servers": broker.bootstrap})
        create_topics(settings.bootstrap_servers, contract_topics(settings.topics), 2)
        settings, env = _exactly_once(settings, [])
        log = tmp_path / "flow.log"
        records = simulated_log(52, 6_000)
        flow = start_flow(env, tmp_path / "recovery", log, "--epoch-interval", "2")
        sent = publish_log(settings, records[:500])
        _wait_committed(settings.bootstrap_servers, settings.topics.scores, 500, 90)
        # More input, and the broker goes away while the flow writes it.
        sent += publish_log(settings, records[500:3_000])
        broker.stop()
        time.sleep(BROKER_DOWN_S)
        assert flow.poll() is None, log.read_text()[-3000:]
        broker.start()

        sent += publish_log(settings, records[3_000:])
        _wait_committed(settings.bootstrap_servers, settings.topics.scores, 6_000, 150)
        flow.send_signal(signal.SIGTERM)
        assert flow.wait(timeout=60) == 0, log.read_text()[-3000:]
        _assert_scored_once(settings, sent)
    finally:
        broker.stop(check=False)


def test_the_consumer_group_shows_offsets_and_lag_in_the_brokers_tool(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"flow_name": f"group-{uuid.uuid4().hex[:10]}"})
    records = simulated_log(53, 600)
    produce(settings.bootstrap_servers, settings.topics.transactions, records[:400])
    run_flow_to_end(settings)
    produce(settings.bootstrap_servers, settings.topics.transactions, records[400:])

    port = settings.bootstrap_servers.rpartition(":")[2]
    tool = subprocess.run(
        [
            str(ROOT / "scripts" / "kafka"),
            "groups",
            "--describe",
            "--group",
            f"streamscore-{settings.flow_name}",
        ],
        env={**os.environ, "KAFKA_PORT": port},
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    rows = [line.split() for line in tool.stdout.splitlines()]
    mine = [r for r in rows if len(r) >= 6 and r[1] == settings.topics.transactions]
    assert len(mine) == settings.topic_partitions, tool.stdout
    # CURRENT-OFFSET: what the service consumed; LAG: what it has not yet.
    assert sum(int(r[3]) for r in mine) == 400, tool.stdout
    assert sum(int(r[5]) for r in mine) == 200, tool.stdout
