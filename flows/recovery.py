"""Startup of a recoverable process: bytewax recovery partitions and the RocksDB state checked.

With ``recovery_dir`` set, bytewax snapshots every stateful step at each epoch
end into SQLite partitions there, and a restarted cluster resumes from the
last epoch every worker committed (inputs rewound to that epoch's offsets).
RocksDB state is kept in step by :mod:`state.epochs`. Before the flow starts,
this module:

- creates the partitions when the directory has none (process 0; the others
  wait for them);
- refuses to start, naming the fix, when the recovery store holds snapshots
  but this process's state dir is gone (deleted, or a new machine), or when
  the RocksDB state fails to open or fails a full checksum read;
- records ``STREAMSCORE_SHARDS`` in fresh state and refuses to resume state
  built with another shard count (a config error naming the setting);
- deletes the snapshots an interrupted run wrote for epochs the cluster will
  run again (:func:`prune_uncommitted_snapshots`);
- with ``rebuild``, deletes this process's state dir and the recovery
  partitions first, so the inputs are read again from their earliest
  retained offsets and the state is rebuilt by replay (scores come out again
  as identical copies; consumers deduplicate by ``event_id``).
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import struct
import time
from collections.abc import Callable
from pathlib import Path

from bytewax.recovery import RecoveryConfig, init_db_dir

from operators import internals
from schemas.errors import REBUILD_HINT, ConfigError, StateError
from schemas.settings import Settings
from state.rocksdb import RocksStore, process_state_path

log = logging.getLogger(__name__)

PART_GLOB = "part-*.sqlite3"
WAIT_POLL_S = 0.5


def partitions(recovery_dir: Path) -> list[Path]:
    """The recovery partition files in ``recovery_dir``."""
    return sorted(recovery_dir.glob(PART_GLOB))


def has_snapshots(recovery_dir: Path) -> bool:
    """Whether any partition holds a state snapshot (a run has committed state)."""
    return any(internals.snapshot_count(part) for part in partitions(recovery_dir))


def resume_epoch(recovery_dir: Path) -> int | None:
    """The epoch the next run resumes from, as bytewax computes it; None when unknown."""
    return internals.resume_epoch(partitions(recovery_dir))


def prune_uncommitted_snapshots(recovery_dir: Path) -> int:
    """Delete snapshots of the epochs the next run will run again; return how many.

    Bytewax writes an epoch's snapshots, then its progress. A run killed
    between the two leaves snapshots of an epoch that the next run executes
    again; bytewax ignores them then, but a key that the next run does not
    touch in that epoch keeps the stale one, and a later resume loads it with
    input offsets from before it (state counted twice; a RocksDB shard refuses
    it as a version it cannot produce). No process writes snapshots before
    the whole cluster has started, so deleting them at startup is safe.
    """
    epoch = resume_epoch(recovery_dir)
    if epoch is None:
        return 0
    deleted = internals.delete_snapshots_from(partitions(recovery_dir), epoch)
    if deleted:
        log.info(
            "deleted %d snapshot(s) of epoch %d or later that an interrupted run wrote "
            "but never committed",
            deleted,
            epoch,
        )
    return deleted


def prepare_recovery(
    settings: Settings,
    *,
    process_id: int,
    processes: int,
    workers: int | None = None,
    rebuild: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> RecoveryConfig | None:
    """Check and set up recovery for this process; None when recovery is off.

    ``workers`` is the cluster's bytewax worker count (``processes`` when not given).
    """
    workers = processes if workers is None else workers
    recovery_dir = settings.recovery_dir
    state_path = process_state_path(settings.state_dir, process_id)
    if recovery_dir is None:
        if rebuild:
            raise ConfigError(
                "--rebuild-state",
                "needs recovery: set STREAMSCORE_RECOVERY_DIR (--recovery-dir)",
            )
        return None
    if rebuild:
        if processes > 1:
            raise ConfigError(
                "--rebuild-state",
                "it deletes the shared recovery partitions, so it runs with one process "
                "only; for a cluster stop every process, delete the recovery dir "
                f"({recovery_dir}) and every state dir, then start them all",
            )
        log.warning("rebuilding state: deleting %s and %s", state_path, recovery_dir)
        shutil.rmtree(state_path, ignore_errors=True)
        shutil.rmtree(recovery_dir, ignore_errors=True)
    _ensure_partitions(settings, process_id, sleep)
    prune_uncommitted_snapshots(recovery_dir)
    if has_snapshots(recovery_dir):
        if not state_path.exists():
            raise StateError(
                f"the recovery store {recovery_dir} holds snapshots but this process's state "
                f"dir {state_path} is missing (deleted, or not this machine's). " + REBUILD_HINT
            )
        store = RocksStore(state_path)
        try:
            entries = store.verify()
            _check_layout(store, settings, state_path, workers)
        finally:
            store.close()
        log.info(
            "resuming from the recovery store %s; state at %s verified (%d entries, "
            "checksums good)",
            recovery_dir,
            state_path,
            entries,
        )
    else:
        # Nothing committed: whatever an earlier run left cannot match a resume point.
        shutil.rmtree(state_path, ignore_errors=True)
        store = RocksStore(state_path)  # creates the dir
        try:
            _check_layout(store, settings, state_path, workers)
        finally:
            store.close()
    return RecoveryConfig(recovery_dir)  # type: ignore[no-untyped-call]


# The shard count the state was built with. Cards and merchants are placed on shards by
# ``crc32(id) % shards``, and every shard's snapshot names its inputs, so state resumed
# under another count would silently split card histories and stall merchant watermarks.
LAYOUT_KEY = b"L" + b"shards"
# The cluster's worker count: shards are named after the worker they are placed on
# (:mod:`operators.placement`), so state under another count would not be found.
WORKERS_KEY = b"L" + b"workers"
_U32 = struct.Struct(">I")


def _check_layout(store: RocksStore, settings: Settings, state_path: Path, workers: int) -> None:
    """Record the shard and worker counts in fresh state; refuse state built with others."""
    shards = settings.shard_count(workers)
    stored, stored_workers = store.get_many([LAYOUT_KEY, WORKERS_KEY])
    if stored is None:
        # Fresh state, or state without a recorded count: this run's counts become its own.
        store.write({LAYOUT_KEY: _U32.pack(shards), WORKERS_KEY: _U32.pack(workers)})
        return
    # The worker count first: with the default shard count it decides that count too.
    # State without a recorded worker count named its shards as one worker does.
    (built_workers,) = (1,) if stored_workers is None else _U32.unpack(stored_workers)
    if built_workers != workers:
        raise ConfigError(
            "--addresses (-a) / --workers-per-process (-w)",
            f"give {workers} bytewax worker(s) in all, but the state in {state_path} and "
            f"the recovery snapshots were built with {built_workers}: restart with the "
            "same processes and workers per process, or rebuild the state under the new "
            "count (--rebuild-state)",
        )
    (built_with,) = _U32.unpack(stored)
    if built_with != shards:
        given = f"{shards}" if settings.shards is not None else f"unset (one a worker: {shards})"
        raise ConfigError(
            "STREAMSCORE_SHARDS",
            f"is {given}, but the state in {state_path} and the recovery "
            f"snapshots were built with {built_with} shards: start with "
            f"STREAMSCORE_SHARDS={built_with}, or rebuild the state under the new count "
            "(--rebuild-state)",
        )


def _partitions_ready(recovery_dir: Path) -> bool:
    """Whether every recovery partition exists with its tables.

    Process 0 creates the partition files and then their tables: another
    process that saw only the files would read a database with no tables yet.
    """
    parts = partitions(recovery_dir)
    if not parts:
        return False
    try:
        for part in parts:
            if not internals.partition_counts(part):  # a host may hold only some: any count
                return False
    except sqlite3.Error:
        return False
    return True


def _ensure_partitions(settings: Settings, process_id: int, sleep: Callable[[float], None]) -> None:
    recovery_dir = settings.recovery_dir
    assert recovery_dir is not None
    if process_id == 0:
        if partitions(recovery_dir):
            return
        recovery_dir.mkdir(parents=True, exist_ok=True)
        init_db_dir(recovery_dir, settings.recovery_partitions)  # type: ignore[no-untyped-call]
        log.info(
            "created %d recovery partition(s) in %s", settings.recovery_partitions, recovery_dir
        )
        return
    deadline = time.monotonic() + settings.startup_wait_s
    while not _partitions_ready(recovery_dir):
        if time.monotonic() > deadline:
            raise ConfigError(
                "STREAMSCORE_RECOVERY_DIR (--recovery-dir)",
                f"no recovery partitions appeared in {recovery_dir} within "
                f"{settings.startup_wait_s:.0f} s: process 0 creates them; every process "
                "needs the same recovery dir",
            )
        sleep(WAIT_POLL_S)
