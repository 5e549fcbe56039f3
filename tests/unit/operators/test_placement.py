"""Shard keys are placed on the workers the engine itself routes them to."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import cluster_main

from operators.internals import bytewax_worker, siphash13
from operators.placement import shard_keys


def test_siphash13_matches_pythons_own_siphash_with_a_zero_key() -> None:
    # CPython hashes bytes with SipHash-1-3; PYTHONHASHSEED=0 makes its key zero, as
    # Rust's DefaultHasher's is. (CPython hashes b"" to 0 as a special case.)
    samples = [b"c0\xff", b"m15\xff", bytes(range(256)), b"x" * 7, b"y" * 8, b"z" * 9]
    code = f"import sys; print([hash(b) % 2**64 for b in {samples!r}])"
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str([siphash13(b) for b in samples])


@pytest.mark.parametrize("workers", [1, 2, 3, 4])
def test_shard_i_goes_to_worker_i_mod_workers(workers: int) -> None:
    for prefix in ("c", "m"):
        keys = shard_keys(prefix, 16, workers)
        assert [bytewax_worker(k, workers) for k in keys] == [i % workers for i in range(16)]
        assert len(set(keys)) == 16
        # Names stay readable: the shard index, then a salt only where needed.
        assert all(k.split(".")[0] == f"{prefix}{i}" for i, k in enumerate(keys))


def test_one_worker_keeps_the_plain_names() -> None:
    assert shard_keys("c", 16, 1) == tuple(f"c{i}" for i in range(16))


def test_shard_keys_refuse_an_empty_layout() -> None:
    with pytest.raises(ValueError, match="at least one shard"):
        shard_keys("c", 0, 2)


class _Source(DynamicSource[tuple[str, str]]):
    def __init__(self, keys: list[str], threads: dict[int, int]) -> None:
        self._keys = keys
        self._threads = threads

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSourcePartition[tuple[str, str]]:
        self._threads[threading.get_ident()] = worker_index
        return _Once(self._keys if worker_index == 0 else [])


class _Once(StatelessSourcePartition[tuple[str, str]]):
    def __init__(self, keys: list[str]) -> None:
        self._keys = keys
        self._done = False

    def next_batch(self) -> list[tuple[str, str]]:
        if self._done:
            raise StopIteration
        self._done = True
        return [(k, k) for k in self._keys]


class _Record(op.StatefulBatchLogic[str, str, None]):
    def __init__(self, seen: dict[str, int], lock: threading.Lock) -> None:
        self._seen = seen
        self._lock = lock

    def on_batch(self, values: list[str]) -> tuple[list[str], bool]:
        with self._lock:
            for key in values:
                self._seen[key] = threading.get_ident()
        return [], op.StatefulBatchLogic.DISCARD

    def snapshot(self) -> None:
        return None


class _Null(DynamicSink[Any]):
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _NullPart:
        return _NullPart()


class _NullPart(StatelessSinkPartition[Any]):
    def write_batch(self, items: list[Any]) -> None:
        pass


def test_the_engine_routes_keys_to_the_predicted_worker() -> None:
    """A two-worker bytewax cluster puts every key where :func:`bytewax_worker` says."""
    keys = [*shard_keys("c", 16, 2), *shard_keys("m", 16, 2), *(f"c{i}" for i in range(16))]
    keys = list(dict.fromkeys(keys))
    threads: dict[int, int] = {}
    seen: dict[str, int] = {}
    flow = Dataflow("placement")
    stream = op.input("in", flow, _Source(keys, threads))
    done = op.stateful_batch("record", stream, lambda _resume: _Record(seen, threading.Lock()))
    op.output("out", done, _Null())
    cluster_main(flow, [], 0, worker_count_per_proc=2)  # type: ignore[no-untyped-call]
    assert set(threads.values()) == {0, 1}
    placed = {key: threads[ident] for key, ident in seen.items()}
    assert placed == {key: bytewax_worker(key, 2) for key in keys}
    # The plain names are what bytewax spread 10/6; the chosen ones are 8/8.
    chosen = shard_keys("c", 16, 2)
    assert sorted(placed[k] for k in chosen) == [0] * 8 + [1] * 8
