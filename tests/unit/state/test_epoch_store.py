"""Epoch-versioned shard state: commits, roll-back to a resume version, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.errors import StateError
from state.epochs import EpochStore
from state.memory import MemoryStore
from state.rocksdb import RocksStore
from state.store import StateStore
from tests.unit.state.recording import RecordingStore


def _attached(
    base: StateStore, shard: str = "c1", version: int | None = None, keep: int = 8
) -> EpochStore:
    store = EpochStore(base, shard, keep=keep)
    store.attach(version)
    return store


def _contents(store: StateStore) -> dict[bytes, bytes]:
    return dict(store.scan(b"", b"\xff" * 8))


def test_writes_stay_in_memory_until_commit() -> None:
    base = MemoryStore()
    store = _attached(base)
    store.write({b"a": b"1"})
    assert store.get_many([b"a"]) == [b"1"]
    assert _attached(base, version=0).get_many([b"a"]) == [None]  # nothing reached the base
    assert store.commit() == 1
    assert _attached(base, version=1).get_many([b"a"]) == [b"1"]


def test_commit_without_changes_keeps_the_version() -> None:
    store = _attached(MemoryStore())
    assert store.commit() == 0
    store.write({b"a": b"1"})
    assert store.commit() == 1
    assert store.commit() == 1


def test_scan_merges_overlay_puts_and_deletes_in_key_order() -> None:
    base = MemoryStore()
    store = _attached(base)
    store.write({b"a": b"1", b"c": b"3", b"e": b"5"})
    store.commit()
    store.write({b"b": b"2", b"c": None, b"e": b"55", b"f": b"6"})
    assert list(store.scan(b"a", b"f")) == [(b"a", b"1"), (b"b", b"2"), (b"e", b"55")]


def test_resume_rolls_back_epochs_the_recovery_store_never_committed() -> None:
    base = MemoryStore()
    store = _attached(base)
    store.write({b"a": b"1", b"b": b"1"})
    assert store.commit() == 1
    store.write({b"a": b"2", b"c": b"2"})
    assert store.commit() == 2
    store.write({b"a": None, b"b": b"3"})
    assert store.commit() == 3
    resumed = _attached(base, version=1)
    assert _contents(resumed) == {b"a": b"1", b"b": b"1"}
    # The rolled-back versions are gone: the next commit is version 2 again.
    resumed.write({b"z": b"9"})
    assert resumed.commit() == 2
    assert _contents(_attached(base, version=2)) == {b"a": b"1", b"b": b"1", b"z": b"9"}


def test_no_snapshot_means_the_shard_starts_empty() -> None:
    base = MemoryStore()
    store = _attached(base)
    store.write({b"a": b"1"})
    store.commit()
    other = _attached(base, shard="c2")
    other.write({b"a": b"other"})
    other.commit()
    assert _contents(_attached(base, shard="c1", version=None)) == {}
    assert _contents(_attached(base, shard="c2", version=1)) == {b"a": b"other"}


def test_state_behind_the_snapshot_is_refused_naming_the_shard() -> None:
    base = MemoryStore()
    with pytest.raises(StateError, match=r"shard c1 is at version 0 but .* needs version 4"):
        _attached(base, version=4)


def test_rolling_back_further_than_the_undo_records_reach_is_refused() -> None:
    base = MemoryStore()
    store = _attached(base, keep=2)
    for i in range(5):
        store.write({b"k": bytes([i])})
        store.commit()
    assert _attached(base, version=3, keep=2).get_many([b"k"]) == [bytes([2])]
    store = _attached(base, keep=2)  # wiped: a fresh start
    for i in range(5):
        store.write({b"k": bytes([i])})
        store.commit()
    with pytest.raises(StateError, match="undo record of version 3 is gone"):
        _attached(base, version=2, keep=2)


def test_undo_records_stay_bounded() -> None:
    base = MemoryStore()
    store = _attached(base, keep=3)
    for i in range(50):
        store.write({b"k": str(i).encode()})
        store.commit()
    undo = [k for k, _ in base.scan(b"U", b"V")]
    assert len(undo) == 3


def test_use_before_attach_is_an_error() -> None:
    with pytest.raises(StateError, match="before attach"):
        EpochStore(MemoryStore(), "c1").get_many([b"a"])


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    epochs=st.lists(
        st.dictionaries(
            st.binary(min_size=1, max_size=3),
            st.one_of(st.none(), st.binary(max_size=4)),
            max_size=6,
        ),
        min_size=1,
        max_size=12,
    ),
    back=st.integers(min_value=0, max_value=5),
)
def test_any_resume_point_within_the_undo_log_restores_that_epoch_exactly(
    epochs: list[dict[bytes, bytes | None]], back: int
) -> None:
    base = MemoryStore()
    store = _attached(base, keep=5)
    model: dict[bytes, bytes] = {}
    after: dict[int, dict[bytes, bytes]] = {0: {}}
    for changes in epochs:
        store.write(changes)
        for k, v in changes.items():
            if v is None:
                model.pop(k, None)
            else:
                model[k] = v
        version = store.commit()
        after[version] = dict(model)
    target = max(0, store.version - back)
    assert _contents(_attached(base, version=target, keep=5)) == after[target]


def test_rocksdb_roll_back_survives_reopen(tmp_path: Path) -> None:
    base = RocksStore(tmp_path / "db")
    store = _attached(base)
    store.write({b"a": b"1"})
    store.commit()
    store.write({b"a": b"2"})
    store.commit()
    base.close()
    again = RocksStore(tmp_path / "db")
    assert _attached(again, version=1).get_many([b"a"]) == [b"1"]
    again.close()


def test_unversioned_store_writes_through_and_cannot_be_resumed() -> None:
    base = MemoryStore()
    store = EpochStore(base, "c1", versioned=False)
    store.attach(None)
    store.write({b"a": b"1"})
    assert _attached(base, version=0).get_many([b"a"]) == [b"1"]  # already in the base
    token = store.commit()
    with pytest.raises(StateError, match="STREAMSCORE_RECOVERY_DIR"):
        _attached(base, version=token)
    with pytest.raises(StateError, match="STREAMSCORE_RECOVERY_DIR"):
        EpochStore(base, "c1", versioned=False).attach(3)


def test_unversioned_reads_keep_nothing_in_memory() -> None:
    """Regression: remembered pre-epoch values are cleared at commits, which an
    unversioned store never makes, so it must not remember any."""
    base = MemoryStore()
    store = EpochStore(base, "c1", versioned=False)
    store.attach(None)
    store.write({bytes([i]): b"v" for i in range(100)})
    for _ in range(3):
        store.get_many([bytes([i]) for i in range(200)])
    assert store._before == {}


def test_keys_written_as_absent_roll_back_to_absent_without_a_read() -> None:
    base = RecordingStore()
    store = _attached(base)
    store.write({b"a": b"1"})
    store.commit()
    base.read.clear()
    store.write({b"a": b"2", b"new": b"n"}, absent=[b"new"])
    assert store.commit() == 2
    assert base.read == [b"S\x02c1a"]  # only the key that existed before
    assert _contents(_attached(base, version=1)) == {b"a": b"1"}


def test_a_key_deleted_this_epoch_and_written_as_absent_rolls_back_to_its_value() -> None:
    base = MemoryStore()
    store = _attached(base)
    store.write({b"k": b"old"})
    store.commit()
    store.write({b"k": None})  # the view lacks it now, RocksDB does not
    store.write({b"k": b"new"}, absent=[b"k"])
    store.commit()
    assert _contents(_attached(base, version=1)) == {b"k": b"old"}


def test_a_cleared_range_rolls_back_to_every_key_it_held() -> None:
    base = MemoryStore()
    store = _attached(base)
    store.write({b"a": b"1", b"b": b"2", b"c": b"3", b"d": b"4"})
    store.commit()
    store.write({b"bb": b"x"})  # written and cleared in the same epoch
    store.write({b"c": b"new"}, cleared=[(b"b", b"d")])
    assert _contents(store) == {b"a": b"1", b"c": b"new", b"d": b"4"}
    assert store.commit() == 2
    assert _contents(_attached(base, version=2)) == {b"a": b"1", b"c": b"new", b"d": b"4"}
    assert _contents(_attached(base, version=1)) == {b"a": b"1", b"b": b"2", b"c": b"3", b"d": b"4"}


def test_unversioned_clears_a_range_of_its_own_shard_in_one_piece() -> None:
    base = RecordingStore()
    mine, other = (EpochStore(base, s, versioned=False) for s in ("c1", "c2"))
    for store in (mine, other):
        store.attach(None)
        store.write({b"a": b"1", b"b": b"2"})
    mine.write({}, cleared=[(b"", b"\xff")])
    assert base.cleared == [(b"S\x02c1", b"S\x02c1\xff")]
    assert _contents(mine) == {} and _contents(other) == {b"a": b"1", b"b": b"2"}
