"""Process-level runtime settings of the service."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from pathlib import Path

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main
from prometheus_client import CollectorRegistry, generate_latest

from benchmarks.stages import StageClock, memory_flow, simulated_log
from flows.main import GC_THRESHOLDS, Tenure, process_metrics, tune_gc
from flows.testing import ReplayRecord
from operators.messages import OutMessage
from schemas.settings import Settings
from state.rocksdb import RocksStore, process_state_path


def test_tune_gc_freezes_startup_objects_and_raises_thresholds() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_tenure_moves_what_survives_out_of_the_generations() -> None:
    gc.collect()
    survivors = [[i] for i in range(10_000)]
    assert id(survivors[0]) in {id(o) for o in gc.get_objects()}
    frozen = gc.get_freeze_count()  # other tests may have frozen objects already
    tenure = Tenure(every_s=0.01).start()
    try:
        deadline = time.monotonic() + 10
        while gc.get_freeze_count() < frozen + len(survivors) and time.monotonic() < deadline:
            time.sleep(0.01)
        tracked = {id(o) for o in gc.get_objects()}
        assert not any(id(s) in tracked for s in survivors)
    finally:
        tenure.stop()
        gc.unfreeze()
    del survivors[:]  # frozen objects are still freed by reference counting


def test_process_metrics_show_memory_collections_and_tenured_objects() -> None:
    registry = CollectorRegistry()
    process_metrics(registry)
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert registry.get_sample_value("streamscore_gc_tenured_objects") == frozen
    finally:
        gc.unfreeze()
    assert registry.get_sample_value("streamscore_gc_tenured_objects") == 0
    text = generate_latest(registry).decode()
    assert "process_resident_memory_bytes" in text
    assert 'python_gc_collections_total{generation="0"}' in text


class _CollectingSink(DynamicSink[tuple[str, list[OutMessage]]]):
    """Runs a full collection at every write: what each step left as cyclic garbage."""

    def __init__(self) -> None:
        self.found: list[int] = []
        self.messages = 0

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CollectingPart:
        return _CollectingPart(self)


class _CollectingPart(StatelessSinkPartition[tuple[str, list[OutMessage]]]):
    def __init__(self, sink: _CollectingSink) -> None:
        self._sink = sink

    def write_batch(self, items: list[tuple[str, list[OutMessage]]]) -> None:
        self._sink.messages += sum(len(messages) for _key, messages in items)
        self._sink.found.append(gc.collect())


def _with_bad_records(records: list[ReplayRecord]) -> list[ReplayRecord]:
    """The partition's records with every kind of reject mixed in, offsets renumbered."""
    good = [r.value for r in records[:50] if r.value is not None]
    far_future = json.loads(good[0])
    far_future["event_id"] = "far-future"
    far_future["event_time"] = "2099-01-01T00:00:00Z"
    bad = [b"{not json", b"\xff\xfe", b'{"event_id": "x", "amount": -1}']
    bad += [json.dumps(far_future).encode(), *good[:5]]  # the last five: duplicates
    values = [r.value for r in records]
    for i, value in enumerate(bad):
        values.insert(100 + 40 * i, value)
    ts = records[-1].timestamp_ms
    return [
        ReplayRecord(records[0].kind, records[0].partition, offset, b"k", value, ts)
        for offset, value in enumerate(values)
    ]


def test_the_flow_leaves_no_reference_cycles(tmp_path: Path) -> None:
    """What :class:`Tenure` relies on: records, windows, scores, dead letters make no cycles."""
    sim = simulated_log(3000, 200, 2)
    # The flow polls the log partition by partition: the order across them is free.
    log = [r for r in sim if r.kind == "chargeback"]
    for partition in (0, 1):
        log += _with_bad_records(
            [r for r in sim if r.kind == "transaction" and r.partition == partition]
        )
    sink = _CollectingSink()
    flow = memory_flow(Settings(), log, tmp_path, batch=100, clock=StageClock(), sink=sink)
    gc.collect()
    run_main(flow)  # type: ignore[no-untyped-call]
    assert sink.messages > 3000  # scores, dead letters, aggregates, drift
    assert len(sink.found) > 10
    # The first collection finds what starting the dataflow left; every later one, nothing.
    assert sink.found[1:] == [0] * (len(sink.found) - 1)


# A service process as the flow leaves its store at the end: still referenced (so
# never freed by the interpreter), its last writes in the memtable, no WAL (fresh).
_EXIT_AFTER_WRITING = """
import ctypes, sys
from pathlib import Path
from flows.main import open_state
from schemas.settings import Settings

store = open_state(Settings(state_dir=Path(sys.argv[1])), 0)()
store.write({b"last": b"written"})
ctypes.pythonapi.Py_IncRef(ctypes.py_object(store))
"""


def test_the_state_store_is_closed_when_the_process_exits(tmp_path: Path) -> None:
    # Unclosed, RocksDB's flush threads outlive the interpreter: a flush running while
    # the process's C++ objects are destroyed crashed it (SIGSEGV) after the flow
    # finished. Closed, the memtable is flushed, so what the last write held is on disk.
    done = subprocess.run(
        [sys.executable, "-c", _EXIT_AFTER_WRITING, str(tmp_path)],
        cwd=Path(__file__).resolve().parents[3],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    store = RocksStore(process_state_path(tmp_path, 0))
    try:
        assert store.get_many([b"last"]) == [b"written"]
    finally:
        store.close()
