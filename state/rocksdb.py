"""RocksDB state store on rocksdict: one database per worker process under the state dir.

Options: WAL on (off for a store that is thrown away at the next start, see
:class:`ProcessStore`), point-in-time WAL recovery (never absolute consistency, which
refuses to open after any torn tail), paranoid checks and block checksums so
damage is detected rather than served, a bounded block cache so a million
cards do not grow the process, LZ4 compression. Writes go through one
``WriteBatch`` per call; reads through one multi-get. Every RocksDB error
(a checksum mismatch in an SST block, an I/O error) becomes a
:class:`schemas.errors.StateError` naming the database: scans check the
iterator's status, because an iterator that hits a damaged block simply ends.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from rocksdict import (
    BlockBasedOptions,
    Cache,
    DBCompressionType,
    DBRecoveryMode,
    Options,
    Rdict,
    ReadOptions,
    WriteBatch,
    WriteOptions,
)

from schemas.errors import REBUILD_HINT, DiskFullError, StateError
from state.store import Ranges

BLOCK_CACHE_BYTES = 64 * 1024 * 1024
WRITE_BUFFER_BYTES = 32 * 1024 * 1024


def _options() -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.set_paranoid_checks(True)
    opts.set_wal_recovery_mode(DBRecoveryMode.point_in_time())
    opts.set_compression_type(DBCompressionType.lz4())
    opts.set_write_buffer_size(WRITE_BUFFER_BYTES)
    opts.set_max_write_buffer_number(2)
    table = BlockBasedOptions()
    table.set_block_cache(Cache(BLOCK_CACHE_BYTES))
    table.set_cache_index_and_filter_blocks(True)
    table.set_bloom_filter(10, False)
    opts.set_block_based_table_factory(table)
    return opts


class RocksStore:
    """A :class:`state.store.StateStore` on one RocksDB database."""

    def __init__(self, path: Path, *, wal: bool = True) -> None:
        path.mkdir(parents=True, exist_ok=True)
        try:
            self._db = Rdict(str(path), _options())
        except Exception as exc:  # rocksdict raises plain Exception for RocksDB errors
            if is_disk_full(exc):
                raise DiskFullError(_disk_full_message(path, exc)) from None
            raise StateError(f"cannot open RocksDB state at {path}: {exc}") from None
        self._path = path
        self._closed = False
        read = ReadOptions()
        read.set_verify_checksums(True)
        self._db.set_read_options(read)
        self._write_options = WriteOptions()
        # A property at runtime; rocksdict's stub declares it a method.
        self._write_options.disable_wal = not wal  # type: ignore[method-assign,assignment]

    @property
    def path(self) -> Path:
        """Directory of the database."""
        return self._path

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """See StateStore."""
        self._check()
        if not keys:
            return []
        try:
            values: list[bytes | None] = self._db.get(list(keys)) or []
        except Exception as exc:
            raise self._damaged(exc) from None
        return values

    def write(self, changes: Mapping[bytes, bytes | None], *, cleared: Ranges = ()) -> None:
        """See StateStore: a cleared range is one range tombstone, whatever it holds."""
        self._check()
        if not changes and not cleared:
            return
        batch = WriteBatch(raw_mode=True)
        for start, end in cleared:
            if start < end:
                batch.delete_range(start, end)
        for key, value in changes.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        try:
            self._db.write(batch, self._write_options)
        except Exception as exc:
            raise self._damaged(exc) from None

    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        """See StateStore."""
        self._check()
        it = self._db.iter()
        try:
            it.seek(start)
            while it.valid():
                key = it.key()
                if key >= end:
                    return
                yield key, it.value()
                it.next()
            it.status()
        except StateError:
            raise
        except Exception as exc:
            raise self._damaged(exc) from None

    def verify(self) -> int:
        """Read every entry with checksums on; the entry count, or StateError on damage."""
        return sum(1 for _ in self.scan(b"", b"\xff" * 16))

    def approximate_keys(self) -> int:
        """See StateStore."""
        return int(self._db.property_int_value("rocksdb.estimate-num-keys") or 0)

    def flush(self) -> None:
        """Flush memtables to SST files (tests use it to exercise compaction and TTL)."""
        self._db.flush()

    def close(self) -> None:
        """See StateStore."""
        if not self._closed:
            self._closed = True
            self._db.close()

    def _damaged(self, exc: Exception) -> StateError:
        if is_disk_full(exc):
            return DiskFullError(_disk_full_message(self._path, exc))
        return StateError(
            f"the RocksDB state at {self._path} is damaged ({exc}); it is not served. "
            + REBUILD_HINT
        )

    def _check(self) -> None:
        if self._closed:
            raise StateError(f"the RocksDB store at {self._path} is closed")


def is_disk_full(exc: BaseException) -> bool:
    """Whether a RocksDB or OS error says the device is out of space."""
    text = str(exc).lower()
    return any(words in text for words in ("no space left", "enospc", "disk full", "disk is full"))


def _disk_full_message(path: Path, exc: Exception) -> str:
    return (
        f"no space left on the device holding the RocksDB state at {path} ({exc}). "
        "The state is not damaged: free space on that device and start again; "
        "the flow resumes from its last snapshot and nothing needs rebuilding"
    )


def check_writable(directory: Path) -> None:
    """Create ``directory`` if needed and prove a file can be written in it (OSError if not)."""
    directory.mkdir(parents=True, exist_ok=True)
    probe = directory / ".streamscore-write-check"
    try:
        probe.write_bytes(b"ok")
    finally:
        probe.unlink(missing_ok=True)


def process_state_path(state_dir: Path, process_id: int) -> Path:
    """The database directory of one process under the state dir."""
    return state_dir / f"process-{process_id}"


class ProcessStore:
    """Opens this process's database once, on first use, for all of its workers.

    ``fresh`` deletes what a previous run left: without bytewax recovery the
    inputs are read again from the beginning, and old window state would count
    every event twice; such a store also writes no WAL, since nothing is ever
    recovered from it and the WAL's writes would be pure cost. With recovery the state is
    kept and each shard rolls it to its resume point (:mod:`state.epochs`).
    """

    def __init__(self, state_dir: Path, process_id: int, *, fresh: bool) -> None:
        self._path = process_state_path(state_dir, process_id)
        self._fresh = fresh
        self._store: RocksStore | None = None
        self._lock = threading.Lock()

    def __call__(self) -> RocksStore:
        """The process's store."""
        with self._lock:
            if self._store is None:
                if self._fresh and self._path.exists():
                    shutil.rmtree(self._path)
                self._store = RocksStore(self._path, wal=not self._fresh)
            return self._store

    def close(self) -> None:
        """Close the database if it was opened (a later call opens it again)."""
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
