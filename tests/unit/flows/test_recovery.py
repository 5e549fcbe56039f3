"""Startup of a recoverable process: partitions, refusals that name the fix, rebuild."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from bytewax.recovery import init_db_dir

from flows.recovery import (
    LAYOUT_KEY,
    WORKERS_KEY,
    has_snapshots,
    partitions,
    prepare_recovery,
    prune_uncommitted_snapshots,
    resume_epoch,
)
from schemas.errors import ConfigError, StateError
from schemas.settings import Settings, load_settings
from state.rocksdb import RocksStore, process_state_path


def _settings(tmp_path: Path, **extra: object) -> Settings:
    return load_settings(state_dir=tmp_path / "state", recovery_dir=tmp_path / "recovery", **extra)


def _add_snapshot(recovery: Path) -> None:
    (part,) = partitions(recovery)
    with sqlite3.connect(part) as db:
        db.execute(
            "INSERT INTO snaps (step_id, state_key, snap_epoch, ser_change) VALUES (?, ?, ?, ?)",
            ("streamscore.windows-cards", "c0", 3, b"x"),
        )


def test_without_a_recovery_dir_there_is_no_recovery(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path / "state")
    assert prepare_recovery(settings, process_id=0, processes=1) is None


def test_rebuild_without_a_recovery_dir_names_the_setting(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path / "state")
    with pytest.raises(ConfigError, match="STREAMSCORE_RECOVERY_DIR"):
        prepare_recovery(settings, process_id=0, processes=1, rebuild=True)


def test_rebuild_in_a_cluster_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="one process only"):
        prepare_recovery(_settings(tmp_path), process_id=0, processes=2, rebuild=True)


def test_process_0_creates_the_partitions_and_an_empty_store_starts_clean(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path, recovery_partitions=2)
    stale = process_state_path(settings.state_dir, 0)
    RocksStore(stale).close()
    (stale / "marker").write_text("left by an earlier run")
    assert prepare_recovery(settings, process_id=0, processes=1) is not None
    assert len(partitions(tmp_path / "recovery")) == 2
    assert not has_snapshots(tmp_path / "recovery")
    assert not (stale / "marker").exists(), "state without snapshots cannot be resumed"


def test_other_processes_wait_for_the_partitions_then_name_the_setting(tmp_path: Path) -> None:
    settings = _settings(tmp_path, startup_wait_s=0)
    with pytest.raises(ConfigError, match=r"STREAMSCORE_RECOVERY_DIR.*process 0 creates them"):
        prepare_recovery(settings, process_id=1, processes=2, sleep=lambda _s: None)


def test_other_processes_wait_until_process_0_has_created_the_tables(tmp_path: Path) -> None:
    # Process 0 creates the partition files, then their tables: a partition file with
    # no tables yet is not ready, and process 1 waits instead of reading it.
    settings = _settings(tmp_path)
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    sqlite3.connect(recovery / "part-0.sqlite3").close()  # the file, no tables yet
    polls: list[float] = []

    def create_tables_on_the_second_poll(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) == 2:
            (recovery / "part-0.sqlite3").unlink()
            init_db_dir(recovery, 1)  # type: ignore[no-untyped-call]

    prepare_recovery(settings, process_id=1, processes=2, sleep=create_tables_on_the_second_poll)
    assert len(polls) == 2
    assert not has_snapshots(recovery)


def test_snapshots_without_the_state_dir_are_refused_naming_the_fix(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    prepare_recovery(settings, process_id=0, processes=1)
    _add_snapshot(tmp_path / "recovery")
    shutil.rmtree(process_state_path(settings.state_dir, 0))
    with pytest.raises(StateError, match=r"state dir .* is missing.*--rebuild-state"):
        prepare_recovery(settings, process_id=0, processes=1)


def test_rebuild_deletes_state_and_snapshots(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    prepare_recovery(settings, process_id=0, processes=1)
    _add_snapshot(tmp_path / "recovery")
    store = RocksStore(process_state_path(settings.state_dir, 0))
    store.write({b"k": b"v"})
    store.close()
    prepare_recovery(settings, process_id=0, processes=1, rebuild=True)
    assert not has_snapshots(tmp_path / "recovery")
    store = RocksStore(process_state_path(settings.state_dir, 0))
    assert store.get_many([b"k"]) == [None]
    store.close()


def test_state_built_with_another_shard_count_is_refused_naming_the_setting(
    tmp_path: Path,
) -> None:
    prepare_recovery(_settings(tmp_path, shards=16), process_id=0, processes=1)
    _add_snapshot(tmp_path / "recovery")
    prepare_recovery(_settings(tmp_path, shards=16), process_id=0, processes=1)  # same: resumes
    with pytest.raises(ConfigError, match=r"STREAMSCORE_SHARDS: is 4, .* built with 16 shards"):
        prepare_recovery(_settings(tmp_path, shards=4), process_id=0, processes=1)
    # The way out it names: rebuild under the new count.
    prepare_recovery(_settings(tmp_path, shards=4), process_id=0, processes=1, rebuild=True)
    prepare_recovery(_settings(tmp_path, shards=4), process_id=0, processes=1)


def test_state_built_with_16_shards_under_the_default_names_the_count_to_set(
    tmp_path: Path,
) -> None:
    # State built with 16 shards must not resume under the default (one shard a
    # worker), and the error says how to keep it.
    prepare_recovery(_settings(tmp_path, shards=16), process_id=0, processes=1)
    _add_snapshot(tmp_path / "recovery")
    with pytest.raises(
        ConfigError,
        match=r"STREAMSCORE_SHARDS: is unset \(one a worker: 1\), .* built with 16 shards: "
        r"start with STREAMSCORE_SHARDS=16",
    ):
        prepare_recovery(_settings(tmp_path), process_id=0, processes=1)
    prepare_recovery(_settings(tmp_path, shards=16), process_id=0, processes=1)


def test_state_kept_before_the_count_was_recorded_adopts_this_runs_count(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path, shards=8)
    _resumable_state_without(settings, LAYOUT_KEY)
    prepare_recovery(settings, process_id=0, processes=1)
    with pytest.raises(ConfigError, match="built with 8 shards"):
        prepare_recovery(_settings(tmp_path, shards=16), process_id=0, processes=1)


def test_state_built_with_another_worker_count_is_refused_naming_the_flags(
    tmp_path: Path,
) -> None:
    # Shards are named after the worker they are placed on: another count renames them.
    settings = _settings(tmp_path)
    prepare_recovery(settings, process_id=0, processes=1, workers=2)
    _add_snapshot(tmp_path / "recovery")
    prepare_recovery(settings, process_id=0, processes=1, workers=2)  # same: resumes
    with pytest.raises(ConfigError, match=r"--workers-per-process \(-w\): give 1 .* built with 2"):
        prepare_recovery(settings, process_id=0, processes=1)
    prepare_recovery(settings, process_id=0, processes=1, rebuild=True)
    prepare_recovery(settings, process_id=0, processes=1)


def test_state_kept_before_the_worker_count_was_recorded_counts_as_one_worker(
    tmp_path: Path,
) -> None:
    # Before placement, every cluster used the one-worker names.
    settings = _settings(tmp_path)
    _resumable_state_without(settings, WORKERS_KEY)
    prepare_recovery(settings, process_id=0, processes=1)
    with pytest.raises(ConfigError, match="built with 1"):
        prepare_recovery(settings, process_id=0, processes=2, workers=2)


def _resumable_state_without(settings: Settings, key: bytes) -> None:
    """State and a snapshot to resume from, as written before ``key`` was recorded."""
    prepare_recovery(settings, process_id=0, processes=1)
    assert settings.recovery_dir is not None
    _add_snapshot(settings.recovery_dir)
    store = RocksStore(process_state_path(settings.state_dir, 0))
    store.write({key: None})
    store.close()


def _run_history(recovery: Path, rows: dict[str, list[tuple[object, ...]]]) -> None:
    """Rows of bytewax's tables, spread over the partitions as bytewax shards them."""
    parts = partitions(recovery)
    columns = {
        "exs": "ex_num, worker_count, resume_epoch",
        "fronts": "ex_num, worker_index, worker_frontier",
        "snaps": "step_id, state_key, snap_epoch, ser_change",
    }
    for table, values in rows.items():
        for i, row in enumerate(values):
            marks = ", ".join("?" * len(row))
            with sqlite3.connect(parts[i % len(parts)]) as db:
                db.execute(f"INSERT INTO {table} ({columns[table]}) VALUES ({marks})", row)


def _snap_epochs(recovery: Path) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for part in partitions(recovery):
        with sqlite3.connect(part) as db:
            out += db.execute("SELECT state_key, snap_epoch FROM snaps")
    return sorted(out)


def test_snapshots_of_an_epoch_that_never_committed_are_deleted(tmp_path: Path) -> None:
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 2)  # type: ignore[no-untyped-call]
    assert resume_epoch(recovery) is None
    # Run 0 (2 workers, from epoch 1) committed epoch 1 on both workers and epoch 2 on
    # one; it was killed after writing epoch 2's and epoch 3's snapshots of some keys.
    _run_history(
        recovery,
        {
            "exs": [(0, 2, 1)],
            "fronts": [(0, 0, 3), (0, 1, 2)],
            "snaps": [("s", "a", 1, b"x"), ("s", "b", 2, b"x"), ("s", "c", 3, b"x")],
        },
    )
    assert resume_epoch(recovery) == 2
    assert prune_uncommitted_snapshots(recovery) == 2
    assert _snap_epochs(recovery) == [("a", 1)]
    # The next run resumed from epoch 2 and got no further: it resumes there again.
    _run_history(recovery, {"exs": [(1, 2, 2)]})
    assert resume_epoch(recovery) == 2
    assert prune_uncommitted_snapshots(recovery) == 0


def test_nothing_is_pruned_without_every_partition(tmp_path: Path) -> None:
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 2)  # type: ignore[no-untyped-call]
    _run_history(recovery, {"exs": [(0, 1, 1)], "snaps": [("s", "a", 1, b"x")]})
    partitions(recovery)[1].unlink()  # another host's partition
    assert resume_epoch(recovery) is None
    assert prune_uncommitted_snapshots(recovery) == 0
