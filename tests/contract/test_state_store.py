"""The state-store contract: every implementation passes the same suite."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.errors import StateError
from state.epochs import EpochStore
from state.memory import MemoryStore
from state.rocksdb import ProcessStore, RocksStore
from state.store import Ranges, StateStore

Factory = Callable[[Path], StateStore]


def _epoch_store(
    base: StateStore, *, commit_every_write: bool, versioned: bool = True
) -> EpochStore:
    """A shard view; optionally committing after every write, so reads mix both layers."""
    store = EpochStore(base, "shard-1", versioned=versioned)
    store.attach(None)
    if commit_every_write:
        write = store.write

        def write_and_commit(
            changes: Mapping[bytes, bytes | None],
            *,
            absent: Iterable[bytes] = (),
            cleared: Ranges = (),
        ) -> None:
            write(changes, absent=absent, cleared=cleared)
            store.commit()

        store.write = write_and_commit  # type: ignore[method-assign]
    return store


IMPLEMENTATIONS: dict[str, Factory] = {
    "memory": lambda _path: MemoryStore(),
    "rocksdb": lambda path: RocksStore(path / "db"),
    "epoch-overlay": lambda path: _epoch_store(
        RocksStore(path / "db-overlay"), commit_every_write=False
    ),
    "epoch-committed": lambda path: _epoch_store(
        RocksStore(path / "db-committed"), commit_every_write=True
    ),
    "epoch-unversioned": lambda path: _epoch_store(
        RocksStore(path / "db-unversioned"), commit_every_write=False, versioned=False
    ),
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    s = IMPLEMENTATIONS[request.param](tmp_path)
    yield s
    s.close()


def test_get_many_returns_values_in_key_order_given(store: StateStore) -> None:
    store.write({b"a": b"1", b"b": b"2"})
    assert store.get_many([b"b", b"zz", b"a"]) == [b"2", None, b"1"]
    assert store.get_many([]) == []


def test_write_puts_and_deletes_in_one_batch(store: StateStore) -> None:
    store.write({b"a": b"1", b"b": b"2"})
    store.write({b"a": None, b"c": b"3", b"missing": None})
    assert store.get_many([b"a", b"b", b"c"]) == [None, b"2", b"3"]


def test_a_write_clears_its_ranges_before_its_puts(store: StateStore) -> None:
    store.write({k: k.upper() for k in (b"a", b"b", b"bb", b"c", b"d", b"e")})
    store.write(
        {b"c2": b"kept", b"e": None},
        cleared=[(b"b", b"d"), (b"x", b"a"), (b"q", b"q")],  # the last two are empty
    )
    assert list(store.scan(b"", b"\xff")) == [(b"a", b"A"), (b"c2", b"kept"), (b"d", b"D")]
    store.write({}, cleared=[(b"", b"\xff")])
    assert list(store.scan(b"", b"\xff")) == []


def test_scan_is_ordered_and_half_open(store: StateStore) -> None:
    store.write({bytes([i]): bytes([i]) for i in (5, 1, 9, 3, 7)})
    assert [k for k, _ in store.scan(bytes([3]), bytes([9]))] == [bytes([i]) for i in (3, 5, 7)]
    assert list(store.scan(bytes([10]), bytes([20]))) == []


def test_values_are_bytes_exactly(store: StateStore) -> None:
    blob = bytes(range(256)) * 10
    store.write({b"\x00key\xff": blob})
    assert store.get_many([b"\x00key\xff"]) == [blob]


@pytest.mark.parametrize("impl", sorted(IMPLEMENTATIONS))
def test_closed_store_refuses_use(impl: str, tmp_path: Path) -> None:
    s = IMPLEMENTATIONS[impl](tmp_path)
    s.close()
    with pytest.raises(StateError):
        s.get_many([b"a"])


_KEY = st.binary(min_size=1, max_size=4)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("set"), _KEY, st.one_of(st.none(), st.binary(max_size=8))),
            st.tuples(st.just("clear"), _KEY, _KEY),
        ),
        max_size=40,
    )
)
def test_implementations_agree_with_a_dict(ops: list[tuple[str, bytes, bytes | None]]) -> None:
    """Puts, deletes and cleared ranges, each its own write, against a dict."""
    import tempfile

    model: dict[bytes, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        stores = [f(Path(tmp)) for f in IMPLEMENTATIONS.values()]
        try:
            for kind, key, other in ops:
                if kind == "clear":
                    assert isinstance(other, bytes)
                    for s in stores:
                        s.write({}, cleared=[(key, other)])
                    model = {k: v for k, v in model.items() if not key <= k < other}
                else:
                    for s in stores:
                        s.write({key: other})
                    if other is None:
                        model.pop(key, None)
                    else:
                        model[key] = other
            expected = sorted(model.items())
            for s in stores:
                assert list(s.scan(b"", b"\xff" * 5)) == expected
        finally:
            for s in stores:
                s.close()


def test_rocksdb_keeps_state_across_reopen(tmp_path: Path) -> None:
    s = RocksStore(tmp_path / "db")
    s.write({b"k": b"v"})
    s.close()
    again = RocksStore(tmp_path / "db")
    assert again.get_many([b"k"]) == [b"v"]
    again.close()


def test_process_store_opens_once_and_fresh_wipes(tmp_path: Path) -> None:
    first = ProcessStore(tmp_path, 3, fresh=False)
    s = first()
    assert first() is s
    s.write({b"k": b"v"})
    s.close()
    kept = ProcessStore(tmp_path, 3, fresh=False)()
    assert kept.get_many([b"k"]) == [b"v"]
    kept.close()
    wiped = ProcessStore(tmp_path, 3, fresh=True)()
    assert wiped.get_many([b"k"]) == [None]
    wiped.close()
