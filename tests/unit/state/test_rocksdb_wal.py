"""Without recovery a process store writes no WAL; with recovery it does, and reopens intact."""

from __future__ import annotations

from pathlib import Path

from schemas.errors import DiskFullError
from state.rocksdb import ProcessStore, RocksStore, process_state_path


def _wal_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.log"))


def _fill(store: RocksStore) -> None:
    for i in range(20):
        store.write({f"k{i}-{j}".encode(): b"v" * 64 for j in range(50)})


def test_fresh_process_store_writes_no_wal(tmp_path: Path) -> None:
    stores = ProcessStore(tmp_path, 0, fresh=True)
    _fill(stores())
    assert _wal_bytes(process_state_path(tmp_path, 0)) == 0
    assert stores().get_many([b"k3-7"]) == [b"v" * 64]
    stores.close()


def test_recoverable_process_store_keeps_its_wal(tmp_path: Path) -> None:
    stores = ProcessStore(tmp_path, 0, fresh=False)
    _fill(stores())
    assert _wal_bytes(process_state_path(tmp_path, 0)) > 20 * 50 * 64
    stores.close()
    reopened = ProcessStore(tmp_path, 0, fresh=False)
    assert reopened().get_many([b"k19-49"]) == [b"v" * 64]
    reopened.close()


def test_a_full_disk_is_told_apart_from_damage(tmp_path: Path) -> None:
    store = RocksStore(tmp_path / "db")
    full = store._damaged(Exception("IO error: No space left on device: While appending to file"))
    assert isinstance(full, DiskFullError)
    assert "not damaged" in str(full) and "--rebuild-state" not in str(full)
    damaged = store._damaged(Exception("Corruption: block checksum mismatch"))
    assert not isinstance(damaged, DiskFullError) and "damaged" in str(damaged)
    store.close()
