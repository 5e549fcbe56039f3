"""Crash consistency on the real broker: kill -9 at random moments, restart, check every output.

The flow runs as a child process with bytewax recovery (``--recovery-dir``,
short epochs) while a producer publishes a seeded simulated log. It is killed
with SIGKILL ten times, each time a seeded random 0-1.5 s after that
incarnation wrote its first new scores, and restarted each time, then
run once more to the end of the input. An independent kafka-python consumer
then checks, against an in-process run of the same log (``flows.testing``: the
same flow, one pass, no crash) and against a crash-free run of the flow:

- every valid transaction was scored; every copy of a score is identical
  (same score, features, decision; only ``processed_at`` may differ);
- every invalid record and every duplicate has its dead letter, nothing else;
- the distinct window aggregates equal the in-process run's, none counted twice;
- the window state left in RocksDB equals the crash-free run's.

The seed is in the test id; ``CRASH_SEED=<n>`` replays a failure.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec
import pytest
from kafka import KafkaConsumer, TopicPartition

from flows.testing import ReplayRecord, run_log
from operators.merchant_windows import unpack_window
from schemas.settings import Settings
from state import keys
from state.rocksdb import RocksStore, process_state_path
from tests.integration.crash_helpers import (
    assert_scored_as_replayed,
    flow_env,
    ingest_order,
    publish_log,
    simulated_log,
    start_flow,
)
from tests.integration.kafka_helpers import read_all, run_flow_to_end

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("CRASH_SEED", "20261123"))
KILLS = 10
TRANSACTIONS = 12_000
PRODUCE_RATE = 300.0  # records/s: production (about 40 s) spans most of the kill phase
# Each incarnation is killed a random moment after it has written new scores, so kills
# land mid-run rather than during startup (startup time varies with the machine's load).
KILL_AFTER_OUTPUT_S = (0.0, 1.5)
OUTPUT_WAIT_S = 30.0
INVALID = (
    b'{"event_id": "broken",',
    b'{"event_id": "x", "card_id": "c-1", "merchant_id": "m-1", "amount": -5,'
    b' "currency": "EUR", "event_time": "2026-11-23T10:00:00Z"}',
)


def _log(rng: random.Random) -> list[tuple[bytes, bytes]]:
    """Simulated transactions with invalid records and re-sent duplicates mixed in."""
    out: list[tuple[bytes, bytes]] = []
    for key, value in simulated_log(SEED % 1000, TRANSACTIONS):
        out.append((key, value))
        roll = rng.random()
        if roll < 0.01:
            out.append((key, INVALID[rng.randrange(len(INVALID))]))
        elif roll < 0.02:
            out.append((key, value))  # a duplicate: same card, same event_id
    return out


def _without_processing_time(score: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in score.items() if k != "processed_at"}


def _state_entries(path: Path) -> dict[bytes, object]:
    """The shards' data in a process store (versions and undo records left out), decoded.

    Card blobs are compared decoded (a diff then names the field that differs);
    a quality window's members as one sorted list (each entry holds one batch's).
    """
    store = RocksStore(path)
    out: dict[bytes, object] = {}
    try:
        for key, value in store.scan(b"S", b"T"):
            at = 2 + key[1]
            namespace = key[at : at + 1]
            if namespace == keys.CARD:
                out[key] = msgspec.msgpack.decode(value)
            elif namespace == keys.WINDOW:
                out[key] = unpack_window(value)
            elif namespace == keys.QUALITY and key[at + 3 + key[at + 2] :][:1] == b"b":
                window = key[: at + 4 + key[at + 2] + 8]  # up to the window's start
                members = out.setdefault(window, [])
                assert isinstance(members, list)
                members.extend(msgspec.msgpack.decode(value))
                members.sort()
            else:
                out[key] = value
        return out
    finally:
        store.close()


@pytest.mark.parametrize("seed", [SEED], ids=lambda s: f"seed={s}")
def test_kill_9_ten_times_loses_nothing_and_counts_nothing_twice(
    settings: Settings, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    log = _log(rng)
    # Several shards in the process (the default is one a worker): the rollback covers
    # shards that share one store.
    settings = settings.model_copy(update={"shards": 4})
    recovery = tmp_path / "recovery"
    env = flow_env(settings)
    logs = tmp_path / "flow.log"
    sent: list[ReplayRecord] = []
    producer = threading.Thread(
        target=lambda: sent.extend(publish_log(settings, log, PRODUCE_RATE))
    )
    producer.start()
    scores = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    parts = [TopicPartition(settings.topics.scores, p) for p in range(settings.topic_partitions)]
    try:
        for _ in range(KILLS):
            before = sum(scores.end_offsets(parts).values())
            flow = start_flow(env, recovery, logs, "--epoch-interval", "0.5")
            deadline = time.monotonic() + OUTPUT_WAIT_S
            while sum(scores.end_offsets(parts).values()) == before:
                if time.monotonic() > deadline:
                    break  # nothing new to score (the producer is done): kill it anyway
                time.sleep(0.05)
            time.sleep(rng.uniform(*KILL_AFTER_OUTPUT_S))
            assert flow.poll() is None, logs.read_text()[-3000:]
            flow.send_signal(signal.SIGKILL)
            flow.wait()
    finally:
        scores.close()
        producer.join()
    final = start_flow(env, recovery, logs, "--epoch-interval", "0.5", "--until-eof")
    assert final.wait(timeout=240) == 0, logs.read_text()[-3000:]
    # Restarts resumed from snapshots, not from the beginning of the topics.
    assert logs.read_text().count("resuming from the recovery store") >= KILLS // 2

    # The reference: one pass through the same operators, no crash.
    expected = run_log(ingest_order(sent), flush=False)
    want_rows = {row.event_id: row for row in expected.rows}

    scores = read_all(settings.bootstrap_servers, settings.topics.scores, expect=len(want_rows))
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for score in scores:
        by_id[score["event_id"]].append(_without_processing_time(score))
    assert set(by_id) == set(want_rows), "every valid transaction scored, nothing else"
    repeated = {k: v for k, v in by_id.items() if len(v) > 1}
    assert repeated, "the kills should have made the flow re-emit some scores"
    assert len(scores) < 1.5 * len(want_rows), "a resume re-emits only the unfinished epochs"
    for event_id, copies in by_id.items():
        assert all(c == copies[0] for c in copies), f"copies of {event_id} differ"
        assert_scored_as_replayed(copies[0], want_rows[event_id])

    dead = read_all(settings.bootstrap_servers, settings.topics.dead_letters)
    got_dead = {(d["partition"], d["offset"], d["reason"]) for d in dead}
    want_dead = {(d["partition"], d["offset"], d["reason"]) for d in expected.dead_letters}
    assert got_dead == want_dead
    assert {d["reason"] for d in dead} == {"json", "schema", "duplicate"}

    aggregates = read_all(settings.bootstrap_servers, settings.topics.window_aggregates)
    got_aggs = {json.dumps({**a, "_key": None}, sort_keys=True) for a in aggregates}
    want_aggs = {
        json.dumps({**a, "_key": None}, sort_keys=True) for a in expected.window_aggregates
    }
    # Repeats are identical copies: one distinct record per window, and the in-process run's set.
    assert len({(a["merchant_id"], a["window_start"]) for a in aggregates}) == len(got_aggs)
    assert got_aggs == want_aggs

    # The state left in RocksDB equals a crash-free run's over the same topics.
    crashed = _state_entries(process_state_path(settings.state_dir, 0))
    clean = settings.model_copy(update={"state_dir": tmp_path / "clean"})
    run_flow_to_end(clean, state_kept=True)
    assert crashed == _state_entries(process_state_path(clean.state_dir, 0))
