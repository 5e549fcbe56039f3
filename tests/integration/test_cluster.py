"""A two-process bytewax cluster (``-i/-a``) with recovery over the real broker.

Each process owns some input partitions and shards and its own RocksDB; card
shards hand transactions to merchant shards across processes; each process
produces its own output. Checked with kafka-python against an in-process run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from operators.placement import shard_keys
from schemas.settings import Settings
from state.rocksdb import RocksStore, process_state_path
from tests.integration.crash_helpers import (
    assert_scored_as_replayed,
    flow_env,
    publish_log,
    replayed_rows,
    simulated_log,
    start_flow,
)
from tests.integration.kafka_helpers import free_port, read_all

pytestmark = pytest.mark.integration


def test_two_processes_score_everything_once_with_the_replays_features(
    settings: Settings, tmp_path: Path
) -> None:
    sent = publish_log(settings, simulated_log(47, 4_000))
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(2))
    env, recovery = flow_env(settings), tmp_path / "recovery"
    logs = [tmp_path / f"process-{i}.log" for i in range(2)]
    procs = [
        start_flow(env, recovery, logs[i], "--until-eof", "-i", str(i), "-a", addresses)
        for i in range(2)
    ]
    try:
        for proc, log in zip(procs, logs, strict=True):
            assert proc.wait(timeout=180) == 0, log.read_text()[-3000:]
    finally:
        for proc in procs:  # one failed: the other waits for it forever
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    expected = replayed_rows(sent)
    scores = read_all(settings.bootstrap_servers, settings.topics.scores, expect=len(expected))
    assert sorted(s["event_id"] for s in scores) == sorted(expected)
    for score in scores:
        assert_scored_as_replayed(score, expected[score["event_id"]])
    # The shards were spread evenly over the cluster: each process committed the card
    # and merchant shards placed on its worker, half of each.
    for i in range(2):
        store = RocksStore(process_state_path(settings.state_dir, i))
        names = {k[2:].decode() for k, _ in store.scan(b"V", b"W")}
        store.close()
        for prefix in ("c", "m"):
            keys = shard_keys(prefix, settings.shard_count(2), 2)
            assert {n for n in names if n in keys} == set(keys[i::2]), f"process {i}"
