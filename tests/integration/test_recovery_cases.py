"""Recovery cases on the real broker: graceful stop, roll-back, damaged or missing state.

Each test runs ``streamscore run --recovery-dir`` as a child process over a
seeded simulated log and checks the outputs with kafka-python against the
in-process run of the same log (``flows.testing``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from flows.testing import ReplayRecord
from flows.tooling import contract_topics, create_topics
from schemas.settings import Settings
from state.epochs import EpochStore
from state.rocksdb import RocksStore, process_state_path
from tests.integration.crash_helpers import (
    assert_scored_as_replayed,
    flow_env,
    publish_log,
    replayed_rows,
    simulated_log,
    start_flow,
    wait_until_reading,
)
from tests.integration.kafka_helpers import OwnBroker, read_all

pytestmark = pytest.mark.integration

EPOCH = ("--epoch-interval", "0.5")
# The "broker down for a minute"; BROKER_DOWN_S shortens it while iterating.
BROKER_DOWN_S = float(os.environ.get("BROKER_DOWN_S", "60"))


def _run_to_end(env: dict[str, str], recovery: Path, log: Path, *args: str) -> None:
    flow = start_flow(env, recovery, log, *EPOCH, "--until-eof", *args)
    assert flow.wait(timeout=180) == 0, log.read_text()[-3000:]


def _check_scores(settings: Settings, sent: list[ReplayRecord]) -> Counter[str]:
    """Every transaction scored with the in-process run's features; the copies per event_id."""
    expected = replayed_rows(sent)
    scores = read_all(settings.bootstrap_servers, settings.topics.scores, expect=len(expected))
    copies = Counter(s["event_id"] for s in scores)
    assert set(copies) == set(expected)
    for score in scores:
        assert_scored_as_replayed(score, expected[score["event_id"]])
    return copies


def _fail_to_start(env: dict[str, str], recovery: Path, log: Path) -> str:
    flow = start_flow(env, recovery, log, *EPOCH, "--until-eof")
    assert flow.wait(timeout=180) != 0
    return log.read_text()


def test_graceful_stop_then_restart_gives_zero_duplicates(
    settings: Settings, tmp_path: Path
) -> None:
    env, recovery, log = flow_env(settings), tmp_path / "recovery", tmp_path / "flow.log"
    records = simulated_log(41, 6_000)
    flow = start_flow(env, recovery, log, *EPOCH)
    sent = publish_log(settings, records[:3_000], rate_per_s=1_000)
    # On a loaded machine start-up can outlast the publishing: signal a running flow.
    wait_until_reading(log)
    time.sleep(1.0)
    flow.send_signal(signal.SIGTERM)
    assert flow.wait(timeout=60) == 0, log.read_text()[-3000:]
    assert "finishing the current epoch" in log.read_text()

    sent += publish_log(settings, records[3_000:])
    _run_to_end(env, recovery, log)
    copies = _check_scores(settings, sent)
    assert max(copies.values()) == 1, "a graceful stop must not re-emit anything"


def test_state_ahead_of_the_recovery_store_is_rolled_back(
    settings: Settings, tmp_path: Path
) -> None:
    """RocksDB committed epochs bytewax never did (the crash window between the two)."""
    # Several shards in the process (the default is one a worker): the rollback covers
    # shards that share one store.
    settings = settings.model_copy(update={"shards": 4})
    env, recovery, log = flow_env(settings), tmp_path / "recovery", tmp_path / "flow.log"
    records = simulated_log(42, 4_000)
    sent = publish_log(settings, records[:2_000])
    _run_to_end(env, recovery, log)

    # Commit two extra epochs of garbage to every card shard, as a crash would leave them.
    store = RocksStore(process_state_path(settings.state_dir, 0))
    shards = {k[2 : 2 + k[1]].decode() for k, _ in store.scan(b"V", b"W")}
    for shard in shards:
        state = EpochStore(store, shard)
        state.attach(_version(store, shard))
        for _ in range(2):
            state.write({k: b"garbage" for k, _ in state.scan(b"", b"\xff")})
            state.commit()
    store.close()

    sent += publish_log(settings, records[2_000:])
    _run_to_end(env, recovery, log)
    assert log.read_text().count("rolled RocksDB back") == len(shards)
    copies = _check_scores(settings, sent)
    assert max(copies.values()) == 1


def test_corrupted_sst_is_refused_then_rebuilt_by_replay(
    settings: Settings, tmp_path: Path
) -> None:
    env, recovery, log = flow_env(settings), tmp_path / "recovery", tmp_path / "flow.log"
    sent = publish_log(settings, simulated_log(43, 3_000))
    _run_to_end(env, recovery, log)
    path = process_state_path(settings.state_dir, 0)
    store = RocksStore(path)
    store.flush()
    store.close()
    sst = max(path.glob("*.sst"), key=lambda p: p.stat().st_size)
    data = bytearray(sst.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 64):
        data[i] ^= 0xFF
    sst.write_bytes(bytes(data))

    output = _fail_to_start(env, recovery, log)
    assert "is damaged" in output and "Corruption" in output and "--rebuild-state" in output

    _run_to_end(env, recovery, log, "--rebuild-state")
    copies = _check_scores(settings, sent)
    assert set(copies.values()) == {2}, "the rebuild replays everything once more"


def test_truncated_wal_is_detected_and_never_served(settings: Settings, tmp_path: Path) -> None:
    env, recovery, log = flow_env(settings), tmp_path / "recovery", tmp_path / "flow.log"
    sent = publish_log(settings, simulated_log(44, 3_000))
    # Killed, not stopped: the committed state is still only in the WAL (no flush).
    flow = start_flow(env, recovery, log, *EPOCH)
    read_all(settings.bootstrap_servers, settings.topics.scores, expect=len(sent), timeout_s=90)
    time.sleep(2.0)  # a few more epochs commit
    flow.send_signal(signal.SIGKILL)
    flow.wait()
    path = process_state_path(settings.state_dir, 0)
    wal = max(path.glob("*.log"), key=lambda p: p.stat().st_size)
    assert wal.stat().st_size > 0, "the state should still be in the WAL (never flushed)"
    with wal.open("r+b") as f:
        f.truncate(wal.stat().st_size // 2)

    output = _fail_to_start(env, recovery, log)
    assert "but the recovery snapshot needs version" in output
    assert "lost its WAL tail" in output

    _run_to_end(env, recovery, log, "--rebuild-state")
    _check_scores(settings, sent)


def test_deleted_state_dir_is_refused_then_rebuilt(settings: Settings, tmp_path: Path) -> None:
    env, recovery, log = flow_env(settings), tmp_path / "recovery", tmp_path / "flow.log"
    sent = publish_log(settings, simulated_log(45, 2_000))
    _run_to_end(env, recovery, log)
    path = process_state_path(settings.state_dir, 0)
    for child in sorted(path.iterdir(), reverse=True):
        child.unlink()
    path.rmdir()

    output = _fail_to_start(env, recovery, log)
    assert "holds snapshots but this process's state dir" in output
    assert "is missing" in output

    _run_to_end(env, recovery, log, "--rebuild-state")
    _check_scores(settings, sent)


def _version(store: RocksStore, shard: str) -> int:
    raw: Any = store.get_many([b"V" + bytes([len(shard)]) + shard.encode()])[0]
    return int.from_bytes(raw, "big")


def test_broker_down_for_a_minute_then_back_loses_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    """A broker of its own (it is stopped mid-run); the flow waits it out and goes on."""
    broker = OwnBroker(tmp_path / "kafka")
    broker.start()
    try:
        settings = settings.model_copy(update={"bootstrap_servers": broker.bootstrap})
        create_topics(settings.bootstrap_servers, contract_topics(settings.topics), 2)
        env, recovery, log = flow_env(settings), tmp_path / "recovery", tmp_path / "flow.log"
        records = simulated_log(46, 4_000)
        flow = start_flow(env, recovery, log, *EPOCH)
        sent = publish_log(settings, records[:2_000])
        read_all(settings.bootstrap_servers, settings.topics.scores, expect=2_000, timeout_s=60)

        broker.stop()
        time.sleep(BROKER_DOWN_S)
        assert flow.poll() is None, log.read_text()[-3000:]
        broker.start()

        sent += publish_log(settings, records[2_000:])
        read_all(settings.bootstrap_servers, settings.topics.scores, expect=4_000, timeout_s=120)
        flow.send_signal(signal.SIGTERM)
        assert flow.wait(timeout=60) == 0, log.read_text()[-3000:]
        assert "(reconnecting with backoff)" in log.read_text()
        copies = _check_scores(settings, sent)
        assert max(copies.values()) == 1
    finally:
        broker.stop(check=False)


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def test_a_full_disk_is_reported_as_full_and_a_restart_after_freeing_space_resumes(
    settings: Settings, tmp_path: Path
) -> None:
    """The state dir on a small real file system that fills up mid-run."""
    state_dir = tmp_path / "small-disk"
    if not _mount_tmpfs(state_dir, "64m"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        settings = settings.model_copy(update={"state_dir": state_dir})
        env, recovery, log = flow_env(settings), tmp_path / "recovery", tmp_path / "flow.log"
        records = simulated_log(44, 6_000)
        flow = start_flow(env, recovery, log, *EPOCH)
        sent = publish_log(settings, records[:2_000])
        read_all(settings.bootstrap_servers, settings.topics.scores, expect=2_000, timeout_s=120)
        # Fill the device, then keep the flow writing.
        filler = state_dir / "filler"
        with filler.open("wb") as out:
            try:
                while True:
                    out.write(b"\0" * (1 << 20))
                    out.flush()
            except OSError:
                pass
        sent += publish_log(settings, records[2_000:])
        assert flow.wait(timeout=180) == 1, log.read_text()[-3000:]
        output = log.read_text()
        assert "no space left" in output.lower() and "not damaged" in output
        assert "--rebuild-state" not in output and "Traceback" not in output

        filler.unlink()  # space freed: the same state resumes, nothing rebuilt
        _run_to_end(env, recovery, log)
        # Every event scored, with the replay's features; what the epochs since the last
        # snapshot emitted comes again as identical copies (at-least-once).
        _check_scores(settings, sent)
    finally:
        subprocess.run(["umount", "-l", str(state_dir)], check=False)
