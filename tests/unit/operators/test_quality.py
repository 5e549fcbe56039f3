"""Online quality from delayed labels: per-shard windows, final after the horizon, merged once."""

from __future__ import annotations

import itertools
import json
import pickle
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.quality import (
    _COUNTS,
    _DECISION,
    Partial,
    QualityAggregator,
    QualityConfig,
    QualityEngine,
    QualityRecord,
    _hashes,
    _SeenIds,
)
from operators.score_records import DECISION_NAMES
from operators.watermarks import NO_WATERMARK
from schemas.timefmt import format_ms
from state import keys
from state.epochs import EpochStore
from state.memory import MemoryStore
from state.rocksdb import RocksStore
from state.store import Ranges

HOUR = 3_600_000
T0 = 1_795_428_000_000  # 2026-11-23T10:00:00Z, an hour boundary
CONFIG = QualityConfig(topic="quality")
DECISIONS = ("approve", "review", "decline")


def _quality_keys(store: MemoryStore) -> list[bytes]:
    return [k for k, _ in store.scan(keys.QUALITY, keys.QUALITY + b"\xff")]


def _record(
    start: int, end: int, scored: int, declined: int, labelled: int, tps: int
) -> QualityRecord:
    return {
        "window_start": format_ms(start),
        "window_end": format_ms(end),
        "scored": scored,
        "declined": declined,
        "labelled": labelled,
        "true_positives": tps,
        "decline_precision": tps / declined if declined else None,
        "decline_recall": tps / labelled if labelled else None,
    }


def test_precision_and_recall_of_a_hand_made_window() -> None:
    engine = QualityEngine(CONFIG, MemoryStore())
    engine.decisions(
        [
            ("a", T0 + 1, "decline"),
            ("b", T0 + 2, "decline"),
            ("c", T0 + 3, "approve"),
            ("d", T0 + 4, "review"),
            ("e", T0 + 5, "decline"),
            ("f", T0 + HOUR - 1, "approve"),
            ("g", T0 + HOUR, "review"),  # the next window
        ]
    )
    engine.chargebacks(["a", "b", "c", "d"])
    partials, through = engine.advance(T0 + 3 * HOUR)
    assert through == T0 + 2 * HOUR
    assert partials == [
        Partial(T0, T0 + HOUR, scored=6, declined=3, labelled=4, true_positives=2),
        Partial(T0 + HOUR, T0 + 2 * HOUR, scored=1, declined=0, labelled=0, true_positives=0),
    ]
    records = QualityAggregator(CONFIG, [""]).add("", partials, through)
    assert records == [
        {
            "window_start": "2026-11-23T10:00:00.000Z",
            "window_end": "2026-11-23T11:00:00.000Z",
            "scored": 6,
            "declined": 3,
            "labelled": 4,
            "true_positives": 2,
            "decline_precision": 2 / 3,
            "decline_recall": 0.5,
        },
        _record(T0 + HOUR, T0 + 2 * HOUR, 1, 0, 0, 0),
    ]
    assert records[1]["decline_precision"] is None
    assert records[1]["decline_recall"] is None


def test_a_second_chargeback_for_a_transaction_counts_once() -> None:
    engine = QualityEngine(CONFIG, MemoryStore())
    engine.decisions([("a", T0, "decline"), ("b", T0, "approve")])
    engine.chargebacks(["a", "a", "b"])
    engine.chargebacks(["a"])
    engine.chargebacks(["b", "b"])
    partials, _ = engine.advance(T0 + 2 * HOUR)
    assert partials == [Partial(T0, T0 + HOUR, 2, 1, 2, 1)]


def test_a_replayed_decision_counts_once() -> None:
    engine = QualityEngine(CONFIG, MemoryStore())
    engine.decisions([("a", T0, "decline"), ("a", T0, "decline")])
    engine.decisions([("a", T0, "decline")])
    partials, _ = engine.advance(T0 + 2 * HOUR)
    assert partials == [Partial(T0, T0 + HOUR, 1, 1, 0, 0)]


def test_chargebacks_for_unknown_transactions_are_ignored() -> None:
    store = MemoryStore()
    engine = QualityEngine(CONFIG, store)
    engine.decisions([("a", T0, "decline")])
    before = list(store.scan(b"", b"\xff"))
    engine.chargebacks(["never-scored", "x"])
    assert list(store.scan(b"", b"\xff")) == before
    engine.chargebacks(["never-scored", "a"])
    assert engine.advance(T0 + 2 * HOUR) == ([Partial(T0, T0 + HOUR, 1, 1, 1, 1)], T0 + HOUR)


def test_a_window_is_final_only_after_its_end_plus_the_horizon() -> None:
    config = QualityConfig(topic="quality", window_ms=HOUR, label_horizon_ms=30 * 60_000)
    engine = QualityEngine(config, MemoryStore())
    engine.decisions([("a", T0 + 10, "decline")])
    final_at = T0 + HOUR + 30 * 60_000
    assert engine.advance(final_at - 1) == ([], T0)
    engine.chargebacks(["a"])  # still in time
    assert engine.advance(final_at) == ([Partial(T0, T0 + HOUR, 1, 1, 1, 1)], T0 + HOUR)


def test_a_window_is_emitted_once_and_final_through_never_goes_back() -> None:
    engine = QualityEngine(CONFIG, MemoryStore())
    assert engine.advance(NO_WATERMARK) == ([], None)
    engine.decisions([("a", T0, "approve")])
    assert engine.advance(T0 + 2 * HOUR) == ([Partial(T0, T0 + HOUR, 1, 0, 0, 0)], T0 + HOUR)
    assert engine.advance(T0 + 2 * HOUR) == ([], T0 + HOUR)
    assert engine.advance(T0 + 5 * HOUR) == ([], T0 + 4 * HOUR)
    assert engine.advance(T0) == ([], T0 + 4 * HOUR)  # an input came back from idle
    assert engine.advance(NO_WATERMARK) == ([], T0 + 4 * HOUR)
    # A replay of the final window's decision and chargeback changes nothing.
    engine.decisions([("a", T0, "approve"), ("late", T0 + 1, "decline")])
    engine.chargebacks(["a", "late"])
    assert engine.advance(T0 + 9 * HOUR) == ([], T0 + 8 * HOUR)


def test_state_of_final_windows_is_deleted() -> None:
    store = MemoryStore()
    engine = QualityEngine(CONFIG, store, shard="m0")
    engine.decisions([(f"old-{i}", T0 + i, "decline") for i in range(50)])
    engine.decisions([(f"new-{i}", T0 + HOUR + i, "approve") for i in range(20)])
    engine.chargebacks([f"old-{i}" for i in range(0, 50, 2)] + ["new-1"])
    # A decision each, a members entry and a counter per window and batch.
    assert len(_quality_keys(store)) == 70 + 2 + 2
    partials, _ = engine.advance(T0 + 2 * HOUR)
    assert partials == [Partial(T0, T0 + HOUR, 50, 50, 25, 25)]
    left = _quality_keys(store)
    assert len(left) == 20 + 1 + 2  # the newer window's decisions, members, counter,
    assert not any(b"old-" in k for k in left)  # and final_through
    engine.chargebacks(["old-0"])  # expired: ignored
    assert _quality_keys(store) == left
    partials, _ = engine.advance(T0 + 3 * HOUR)
    assert partials == [Partial(T0 + HOUR, T0 + 2 * HOUR, 20, 0, 1, 0)]
    assert len(_quality_keys(store)) == 1
    assert store.approximate_keys() == 1


def test_a_new_engine_over_the_store_ignores_replays_of_what_it_holds() -> None:
    store = MemoryStore()
    first = QualityEngine(CONFIG, store, shard="m0")
    first.decisions([(f"tx-{i}", T0 + i, "decline") for i in range(100)])
    # A new process: the filter of stored ids is rebuilt from the store.
    again = QualityEngine(CONFIG, store, shard="m0")
    again.decisions([(f"tx-{i}", T0 + HOUR + i, "approve") for i in range(0, 120, 3)])
    again.chargebacks(["tx-0", "tx-99", "tx-102"])
    assert again.advance(T0 + 3 * HOUR) == (
        [
            Partial(T0, T0 + HOUR, 100, 100, 2, 2),
            Partial(T0 + HOUR, T0 + 2 * HOUR, 6, 0, 1, 0),  # tx-102 .. tx-117 only
        ],
        T0 + 2 * HOUR,
    )
    assert len(_quality_keys(store)) == 1


@pytest.mark.parametrize("members", ["an entry each", "a batch an entry"])
def test_state_with_decisions_keyed_by_event_id_is_still_read(members: str) -> None:
    """State written when decisions were keyed by event id alone (``d``), with the
    window's members an index entry each (``m``) or a batch an entry (``b``)."""
    prefix = keys.QUALITY + b"\x00\x02m0"
    at = T0.to_bytes(8, "big")
    old = {f"old-{i}": i % 3 for i in range(10)}
    newer = {f"newer-{i}": 2 for i in range(4)}  # a later window, still live at the end
    if members == "an entry each":
        listed = {prefix + b"m" + at + e.encode(): b"" for e in old}
        listed.update(
            {prefix + b"m" + (T0 + HOUR).to_bytes(8, "big") + e.encode(): b"" for e in newer}
        )
    else:
        listed = {
            prefix + b"b" + at + bytes(8): msgspec.msgpack.encode(list(old)[:6]),
            prefix + b"b" + at + (6).to_bytes(8, "big"): msgspec.msgpack.encode(list(old)[6:]),
            prefix + b"b" + (T0 + HOUR).to_bytes(8, "big") + bytes(8): msgspec.msgpack.encode(
                list(newer)
            ),
        }
    store = MemoryStore()
    store.write(
        {
            **{prefix + b"d" + e.encode(): _DECISION.pack(T0, c, 0) for e, c in old.items()},
            **{prefix + b"d" + e.encode(): _DECISION.pack(T0 + HOUR, 2, 0) for e in newer},
            **listed,
            prefix + b"w" + at: _COUNTS.pack(10, 3, 0, 0),
            prefix + b"w" + (T0 + HOUR).to_bytes(8, "big"): _COUNTS.pack(4, 4, 0, 0),
        }
    )
    engine = QualityEngine(CONFIG, store, shard="m0")
    # A replay of a stored id (in another window) is ignored; chargebacks label both layouts.
    engine.decisions([("old-2", T0 + HOUR + 5, "approve"), ("new", T0 + 6, "decline")])
    engine.chargebacks(["old-2", "new", "newer-1", "old-2"])
    assert engine.advance(T0 + 2 * HOUR) == ([Partial(T0, T0 + HOUR, 11, 4, 2, 2)], T0 + HOUR)
    # The final window's entries of both layouts are gone; the live window's stay.
    left = _quality_keys(store)
    assert not any(b"old-" in k or b"new\x00" in k for k in left)
    assert sum(k.startswith(prefix + b"d") for k in left) == 4
    engine.chargebacks(["newer-2", "old-3"])  # old-3's window is final: ignored
    assert engine.advance(T0 + 3 * HOUR) == (
        [Partial(T0 + HOUR, T0 + 2 * HOUR, 4, 4, 2, 2)],
        T0 + 2 * HOUR,
    )
    assert _quality_keys(store) == [prefix + b"f"]


def test_a_final_window_is_deleted_as_ranges_in_rocksdb(tmp_path: Path) -> None:
    """Unversioned, a final window's decisions go as one range delete, not a delete each."""
    base = RocksStore(tmp_path / "db", wal=False)
    store = EpochStore(base, "quality-m0", versioned=False)
    store.attach(None)
    engine = QualityEngine(CONFIG, store, shard="m0")
    engine.decisions([(f"tx-{i}", T0 + i, "decline") for i in range(1_000)])
    engine.decisions([(f"tx-{i}", T0 + HOUR + i, "approve") for i in range(1_000, 1_010)])
    writes: list[tuple[int, int]] = []
    write = base.write

    def recording(changes: Mapping[bytes, bytes | None], *, cleared: Ranges = ()) -> None:
        writes.append((len(changes), len(cleared)))
        write(changes, cleared=cleared)

    base.write = recording  # type: ignore[method-assign]
    assert engine.advance(T0 + 2 * HOUR) == ([Partial(T0, T0 + HOUR, 1000, 1000, 0, 0)], T0 + HOUR)
    assert writes == [(2, 3)]  # final_through and the counter; three ranges
    assert sum(1 for _ in store.scan(b"", b"\xff")) == 10 + 1 + 1 + 1
    base.close()


def test_the_filter_never_rules_out_a_stored_id() -> None:
    rng = np.random.default_rng(7)
    seen = _SeenIds()
    windows = {start: rng.integers(0, 2**64, 3_000, dtype=np.uint64) for start in range(0, 50, 10)}
    for start, hashes in windows.items():  # grows from its smallest size on the way
        for chunk in np.array_split(hashes, 7):
            seen.add(start, chunk)
    assert all(seen.may_hold(h).all() for h in windows.values())
    seen.drop_before(20)
    assert all(seen.may_hold(windows[s]).all() for s in (20, 30, 40))
    others = rng.integers(0, 2**64, 100_000, dtype=np.uint64)
    assert seen.may_hold(others).mean() < 0.01  # at 16 bits or more an id
    assert not _SeenIds().may_hold(_hashes(["a", "b"])).any()


class _Unsure(_SeenIds):
    """A filter that rules nothing out: every id is looked up in every live window."""

    def candidates(self, hashes: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        for start in sorted({*self._windows, *self._unfiltered}):
            yield start, np.ones(len(hashes), dtype=bool)


def test_shards_sharing_a_store_keep_apart() -> None:
    store = MemoryStore()
    first, second = (
        QualityEngine(CONFIG, store, shard="m0"),
        QualityEngine(CONFIG, store, shard="m1"),
    )
    first.decisions([("a", T0, "decline")])
    second.decisions([("b", T0, "approve")])
    second.chargebacks(["a"])  # a was scored on the other shard
    assert first.advance(T0 + 2 * HOUR) == ([Partial(T0, T0 + HOUR, 1, 1, 0, 0)], T0 + HOUR)
    assert second.advance(T0 + HOUR) == ([], T0)
    assert second.advance(T0 + 2 * HOUR) == ([Partial(T0, T0 + HOUR, 1, 0, 0, 0)], T0 + HOUR)


def test_bad_decisions_are_rejected_and_change_nothing() -> None:
    store = MemoryStore()
    engine = QualityEngine(CONFIG, store)
    with pytest.raises(ValueError, match="unknown decision"):
        engine.decisions([("a", T0, "decline"), ("b", T0, "block")])
    with pytest.raises(ValueError, match="negative event time"):
        engine.decisions([("a", -1, "decline")])
    with pytest.raises(ValueError, match="unknown decision 3 for 'b'"):
        engine.decide(["a", "b"], np.array([T0, T0]), np.array([2, 3]))
    with pytest.raises(ValueError, match="negative event time -5 for 'b'"):
        engine.decide(["a", "b"], np.array([T0, -5]), np.array([2, 0]))
    assert store.approximate_keys() == 0


def test_decision_codes_are_the_score_records_and_stay_as_stored() -> None:
    """Codes are stored in state: the score records' order must not move them."""
    assert dict(zip(DECISION_NAMES, range(3), strict=True)) == {
        "approve": 0,
        "review": 1,
        "decline": 2,
    }
    store = MemoryStore()
    engine = QualityEngine(CONFIG, store, shard="m0")
    engine.decide(["a", "b", "c"], np.array([T0, T0 + 1, T0 + 2]), np.array([0, 1, 2]))
    stored = {k[-1:]: v for k, v in store.scan(b"", b"\xff") if b"e" + T0.to_bytes(8, "big") in k}
    assert stored == {
        e.encode(): _DECISION.pack(T0, c, 0) for e, c in zip("abc", range(3), strict=True)
    }


@pytest.mark.parametrize(("window_ms", "label_horizon_ms"), [(0, 0), (-1, 0), (HOUR, -1)], ids=str)
def test_config_is_checked(window_ms: int, label_horizon_ms: int) -> None:
    with pytest.raises(ValueError, match="must"):
        QualityConfig(topic="q", window_ms=window_ms, label_horizon_ms=label_horizon_ms)


def test_aggregator_waits_for_every_shard_and_sums_across_them() -> None:
    agg = QualityAggregator(CONFIG, ["m0", "m1", "m2"])
    w0 = Partial(T0, T0 + HOUR, 3, 2, 1, 1)
    w1 = Partial(T0 + HOUR, T0 + 2 * HOUR, 1, 1, 1, 1)
    assert agg.add("m0", [w0, w1], T0 + 2 * HOUR) == []
    assert agg.add("m1", [Partial(T0, T0 + HOUR, 2, 1, 2, 0)], T0 + HOUR) == []
    # m2 never had decisions: its final_through alone releases the first window.
    assert agg.add("m2", [], T0 + 5 * HOUR) == [_record(T0, T0 + HOUR, 5, 3, 3, 1)]
    assert agg.add("m2", [], T0 + 6 * HOUR) == []
    assert agg.add("m1", [], T0 + 3 * HOUR) == [_record(T0 + HOUR, T0 + 2 * HOUR, 1, 1, 1, 1)]
    assert agg.add("m0", [], T0 + 9 * HOUR) == []  # nothing pending: windows without data
    assert agg.snapshot() == ({}, {"m0": T0 + 9 * HOUR, "m1": T0 + 3 * HOUR, "m2": T0 + 6 * HOUR})


def test_aggregator_emits_nothing_while_a_shard_has_no_watermark() -> None:
    agg = QualityAggregator(CONFIG, ["m0", "m1"])
    assert agg.add("m0", [Partial(T0, T0 + HOUR, 1, 1, 1, 1)], T0 + 9 * HOUR) == []
    assert agg.add("m1", [], None) == []
    assert agg.add("m1", [], T0 + HOUR) == [_record(T0, T0 + HOUR, 1, 1, 1, 1)]


def test_aggregator_emits_a_window_once_and_ignores_a_final_through_going_back() -> None:
    agg = QualityAggregator(CONFIG, ["m0"])
    w0 = Partial(T0, T0 + HOUR, 1, 0, 0, 0)
    assert agg.add("m0", [w0], T0 + HOUR) == [_record(T0, T0 + HOUR, 1, 0, 0, 0)]
    assert agg.add("m0", [w0], T0 + HOUR) == []  # a stale copy
    assert agg.add("m0", [], T0) == []
    assert agg.snapshot() == ({}, {"m0": T0 + HOUR})


def test_aggregator_survives_snapshot_and_resume() -> None:
    agg = QualityAggregator(CONFIG, ["m0", "m1"])
    agg.add("m0", [Partial(T0, T0 + HOUR, 2, 1, 1, 1)], T0 + HOUR)
    state = pickle.loads(pickle.dumps(agg.snapshot()))
    resumed = QualityAggregator(CONFIG, ["m0", "m1"], resume=state)
    assert resumed.snapshot() == agg.snapshot()
    out = resumed.add("m1", [Partial(T0, T0 + HOUR, 1, 1, 0, 0)], T0 + HOUR)
    assert out == [_record(T0, T0 + HOUR, 3, 2, 1, 1)]
    # The snapshot is a copy: the resumed aggregator's progress does not leak into it.
    assert state == ({T0: (T0 + HOUR, 2, 1, 1, 1)}, {"m0": T0 + HOUR, "m1": None})


def test_a_shard_added_since_the_snapshot_holds_windows_back() -> None:
    agg = QualityAggregator(CONFIG, ["m0"])
    agg.add("m0", [], T0)
    resumed = QualityAggregator(CONFIG, ["m0", "m1"], resume=agg.snapshot())
    assert resumed.add("m0", [Partial(T0, T0 + HOUR, 1, 0, 0, 0)], T0 + HOUR) == []
    assert resumed.add("m1", [], T0 + HOUR) == [_record(T0, T0 + HOUR, 1, 0, 0, 0)]


def test_aggregator_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one shard"):
        QualityAggregator(CONFIG, [])
    with pytest.raises(ValueError, match="duplicate"):
        QualityAggregator(CONFIG, ["m0", "m0"])
    agg = QualityAggregator(CONFIG, ["m0"])
    with pytest.raises(ValueError, match="unknown quality shard"):
        agg.add("m9", [], T0)
    with pytest.raises(ValueError, match="not finalized"):
        agg.add("m0", [Partial(T0, T0 + HOUR, 1, 0, 0, 0)], T0)
    assert agg.snapshot() == ({}, {"m0": None})


def test_a_record_as_a_message() -> None:
    agg = QualityAggregator(CONFIG, ["m0"])
    (record,) = agg.add("m0", [Partial(T0, T0 + HOUR, 4, 2, 1, 1)], T0 + HOUR)
    message = agg.message(record)
    assert message.topic == "quality"
    assert message.key == b"2026-11-23T10:00:00.000Z"
    assert json.loads(message.value) == {**record, "decline_precision": 0.5}


# --- property: any split over shards gives the brute-force result -------------------------

WINDOW = 1_000
HORIZON = 500
PROPERTY_CONFIG = QualityConfig(topic="quality", window_ms=WINDOW, label_horizon_ms=HORIZON)
END = 20_000  # past every window's end plus the horizon

# (event time, decision, shard, chargeback delays within the horizon, replayed)
txn_strategy = st.tuples(
    st.integers(0, 6_000),
    st.sampled_from(DECISIONS),
    st.integers(0, 3),
    st.lists(st.integers(0, HORIZON - 1), max_size=3),
    st.booleans(),
)


def _oracle(txns: Sequence[tuple[int, str, int, list[int], bool]]) -> dict[str, QualityRecord]:
    """From the definitions: every transaction in its window, labelled if any chargeback."""
    windows: dict[int, list[int]] = {}
    for t, decision, _, delays, _ in txns:
        sums = windows.setdefault(t - t % WINDOW, [0, 0, 0, 0])
        declined, labelled = decision == "decline", bool(delays)
        sums[0] += 1
        sums[1] += declined
        sums[2] += labelled
        sums[3] += declined and labelled
    return {
        format_ms(start): _record(start, start + WINDOW, *sums) for start, sums in windows.items()
    }


@settings(max_examples=200, deadline=None)
@given(
    txns=st.lists(txn_strategy, max_size=40),
    unknown=st.lists(st.tuples(st.integers(0, 6_000), st.integers(0, 3)), max_size=5),
    n_shards=st.integers(1, 4),
    rng=st.randoms(use_true_random=False),
)
def test_any_split_over_shards_matches_brute_force(
    txns: list[tuple[int, str, int, list[int], bool]],
    unknown: list[tuple[int, int]],
    n_shards: int,
    rng: random.Random,
) -> None:
    shards = [f"m{i}" for i in range(n_shards)]
    store = MemoryStore()  # one store for the process, as in production
    engines = {s: QualityEngine(PROPERTY_CONFIG, store, shard=s) for s in shards}
    # Per shard, records in event-time order: (time, kind, event id, decision); a
    # chargeback comes after its transaction and before the window's horizon passes.
    queues: dict[str, list[tuple[int, int, str, str]]] = {s: [] for s in shards}
    for i, (t, decision, index, delays, replayed) in enumerate(txns):
        queue = queues[shards[index % n_shards]]
        queue.extend([(t, 0, f"tx-{i}", decision)] * (1 + replayed))
        queue.extend((t + d, 1, f"tx-{i}", "") for d in delays)
    for i, (t, index) in enumerate(unknown):
        queues[shards[index % n_shards]].append((t, 1, f"unknown-{i}", ""))
    for queue in queues.values():
        queue.sort(key=lambda r: (r[0], r[1]))

    agg = QualityAggregator(PROPERTY_CONFIG, shards)
    out: list[QualityRecord] = []

    def feed(shard: str, watermark: int) -> None:
        nonlocal agg
        partials, through = engines[shard].advance(watermark)
        out.extend(agg.add(shard, partials, through))
        if rng.random() < 0.2:
            state = pickle.loads(pickle.dumps(agg.snapshot()))
            agg = QualityAggregator(PROPERTY_CONFIG, shards, resume=state)

    while any(queues.values()):
        shard = rng.choice(shards)
        if not queues[shard]:  # a shard without records still hears of the watermark
            feed(shard, rng.randint(0, END))
            continue
        size = rng.randint(1, 5)
        batch, queues[shard] = queues[shard][:size], queues[shard][size:]
        for is_chargeback, group in itertools.groupby(batch, key=lambda r: r[1]):
            records = list(group)
            if is_chargeback:
                engines[shard].chargebacks([event_id for _, _, event_id, _ in records])
            else:
                engines[shard].decisions([(e, t, d) for t, _, e, d in records])
        # A watermark at or below the records handled so far (it may even go back).
        feed(shard, batch[-1][0] - rng.randint(0, 2 * WINDOW))
    for shard in rng.sample(shards, len(shards)):
        feed(shard, END)

    assert len(out) == len({r["window_start"] for r in out})
    assert {r["window_start"]: r for r in out} == _oracle(txns)
    # Every final window's state is gone: only each shard's final_through is left.
    assert len(_quality_keys(store)) == n_shards


@settings(max_examples=150, deadline=None)
@given(
    batches=st.lists(
        st.lists(
            st.tuples(st.integers(0, 30), st.integers(0, 5 * WINDOW), st.sampled_from(DECISIONS)),
            max_size=12,
        ),
        max_size=8,
    ),
    watermarks=st.lists(st.integers(0, 8 * WINDOW), min_size=8, max_size=8),
)
def test_a_batch_of_decisions_stores_what_one_at_a_time_does(
    batches: list[list[tuple[int, int, str]]], watermarks: list[int]
) -> None:
    """Batches (ids ruled out by the filter) against single records (every id looked up)."""
    whole, single = MemoryStore(), MemoryStore()
    by_batch = QualityEngine(PROPERTY_CONFIG, whole, shard="m0")
    by_record = QualityEngine(PROPERTY_CONFIG, single, shard="m0")
    by_record._seen = _Unsure()  # every id is looked up in the store
    for batch, watermark in zip(batches, watermarks, strict=False):
        items = [(f"tx-{i}", t, d) for i, t, d in batch]
        by_batch.decisions(items)
        for item in items:
            by_record.decisions([item])
        by_batch.chargebacks([e for e, _, _ in items[::3]])
        by_record.chargebacks([e for e, _, _ in items[::3]])
        assert by_batch.advance(watermark) == by_record.advance(watermark)
        assert _by_window(whole) == _by_window(single)


def _by_window(store: MemoryStore) -> tuple[list[tuple[bytes, bytes]], dict[bytes, list[str]]]:
    """The store's entries but the members entries, and the members of each window.

    A batch's members of a window share one entry, so batches split them differently.
    """
    members = keys.QUALITY + b"\x00\x02m0b"
    other = [(k, v) for k, v in store.scan(b"", b"\xff") if not k.startswith(members)]
    windows: dict[bytes, list[str]] = {}
    for key, value in store.scan(members, members + b"\xff"):
        windows.setdefault(key[: len(members) + 8], []).extend(msgspec.msgpack.decode(value))
    return other, {w: sorted(ids) for w, ids in windows.items()}


def test_rolling_back_an_epoch_restores_its_state_exactly() -> None:
    """Entries the engine creates roll back to absent, the rest to their values."""

    def epoch_store(base: MemoryStore, version: int | None) -> EpochStore:
        store = EpochStore(base, "quality-m0")
        store.attach(version)
        return store

    def first_epoch(store: EpochStore) -> QualityEngine:
        engine = QualityEngine(CONFIG, store, shard="m0")
        engine.decisions([(f"a-{i}", T0 + i, DECISIONS[i % 3]) for i in range(30)])
        engine.chargebacks(["a-1", "a-2"])
        assert store.commit() == 1
        return engine

    crashed, clean = MemoryStore(), MemoryStore()
    store = epoch_store(crashed, None)
    engine = first_epoch(store)
    engine.decisions([(f"b-{i}", T0 + HOUR + i, "decline") for i in range(30)])
    engine.decisions([("a-3", T0 + HOUR, "approve")])  # a replay
    engine.chargebacks(["a-4", "b-0"])
    engine.advance(T0 + 2 * HOUR)  # the first window is final and deleted
    engine.decisions([("a-5", T0 + 2 * HOUR, "review")])  # its id decided again, later
    assert store.commit() == 2
    first_epoch(epoch_store(clean, None))
    resumed = epoch_store(crashed, 1)
    assert list(crashed.scan(b"S", b"T")) == list(clean.scan(b"S", b"T"))
    # The resumed shard goes on as the clean one does.
    again = QualityEngine(CONFIG, resumed, shard="m0")
    again.decisions([("a-6", T0 + 7, "decline"), ("c", T0 + 8, "decline")])
    assert again.advance(T0 + 2 * HOUR) == ([Partial(T0, T0 + HOUR, 31, 11, 2, 1)], T0 + HOUR)


def test_the_filters_stay_within_their_bound_and_never_rule_out_a_stored_id() -> None:
    rng = np.random.default_rng(9)
    seen = _SeenIds(max_words=1 << 10)  # room for about 4,000 ids
    first = rng.integers(0, 2**64, 1_000, dtype=np.uint64)
    seen.add(0, first)
    others = rng.integers(0, 2**64, 20_000, dtype=np.uint64)
    assert seen.may_hold(first).all() and seen.may_hold(others).mean() < 0.01
    crowd = rng.integers(0, 2**64, 10_000, dtype=np.uint64)
    for chunk in np.array_split(crowd, 10):  # outgrows the bound: window 10 goes unfiltered
        seen.add(10, chunk)
    assert seen.may_hold(others).all()  # every id is looked up while it is live
    assert seen._words <= 1 << 10
    seen.drop_before(20)  # both windows final: filtering resumes, memory returned
    assert seen._words == 0 and not seen.may_hold(others).any()
    seen.add(20, crowd[:100])
    assert seen.may_hold(crowd[:100]).all() and seen.may_hold(others).mean() < 0.01
