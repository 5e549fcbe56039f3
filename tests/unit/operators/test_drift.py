"""Drift monitor: silent through a cold start on stationary traffic, quick on a real shift.

The traffic is the realistic simulator's, replayed through the serving
operators with its own event times, so the card windows fill from empty
exactly as they do after a fresh ``streamscore run``.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from models.history import Recorded, from_simulation
from models.manifest import Manifest
from models.onnx_scorer import OnnxModel, load_model
from models.realistic import RealisticConfig, simulate_realistic
from models.simulator import SimEvent
from models.train import Dataset, TrainConfig, dataset, train
from operators.card_features import DAY
from operators.drift import (
    CALENDAR_SIGNALS,
    DriftConfig,
    DriftMonitor,
    DriftSample,
    drift_records,
    warmup_ms,
)
from operators.features import ALL_FEATURES
from operators.watermarks import TimeConfig
from schemas.records import Drift

# Stationary: no daily or weekly cycle, so any window of it has the same distribution.
STATIONARY = RealisticConfig(
    cards=1_000,
    days=10,
    daily_cycle=False,
    weekly_cycle=False,
    fraud_share=0.005,
    chargeback_delay_days=1.0,
    max_chargeback_delay_days=2.0,
)
SMALL = TrainConfig(trees=30, label_horizon_ms=2 * DAY)
# Sparse small-population partitions go quiet for over an hour at times; the default
# far-future bound would then reject their records (see docs/training.md).
TIME = TimeConfig(max_future_ms=2 * DAY)
AMOUNT = ALL_FEATURES.index("txn_amount")


def _features(events: list[SimEvent]) -> Dataset:
    recorded = from_simulation(events, "test")
    return dataset(recorded, time=TIME, label_horizon_ms=SMALL.label_horizon_ms)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> OnnxModel:
    """A small model whose reference comes from stationary traffic's steady state."""
    out = tmp_path_factory.mktemp("model")
    recorded: Recorded = from_simulation(simulate_realistic(STATIONARY), "test")
    train(SMALL, out, recorded, time=TIME, report=False)
    return load_model(Path(out))


def _feed(
    monitor: DriftMonitor, model: OnnxModel, data: Dataset, batch: int = 100
) -> list[tuple[int, str, bool]]:
    """Feed rows in batches; return (events seen, signal, warming_up) of every flag."""
    manifest = model.manifest
    flags = []
    for start in range(0, len(data.y), batch):
        rows = data.x[start : start + batch]
        sample = DriftSample(
            model_version=manifest.model_version,
            names=ALL_FEATURES,
            values=rows.astype(np.float64),
            scores=model.predict(rows),
            event_times=data.event_times[start : start + batch],
        )
        for stat in monitor.observe(sample, manifest):
            if stat.drift:
                flags.append((start + len(rows), stat.signal, stat.warming_up))
    return flags


def test_no_drift_on_100k_stationary_events_cold_start_included(model: OnnxModel) -> None:
    # Other cards and another seed than training: the same distribution, not the same rows.
    traffic = replace(STATIONARY, seed=21, days=35)
    data = _features(list(simulate_realistic(traffic)))
    assert len(data.y) >= 100_000
    data = Dataset(data.x[:100_000], data.y[:100_000], data.event_times[:100_000], data.cards, 0)
    monitor = DriftMonitor(DriftConfig(topic="drift"), model.manifest)
    assert _feed(monitor, model, data) == []


def test_amount_shift_is_flagged_within_2000_events(model: OnnxModel) -> None:
    traffic = replace(STATIONARY, seed=22, days=5)
    events = list(simulate_realistic(traffic))
    shift_time = traffic.start_ms + 3 * DAY  # after the day-long warm-up
    shifted = [
        replace(e, payload={**e.payload, "amount": round(e.payload["amount"] * 4, 2)})
        if e.kind == "transaction" and e.event_time_ms >= shift_time
        else e
        for e in events
    ]
    data = _features(shifted)
    shift_at = int(np.argmax(data.event_times >= shift_time))
    assert data.x[shift_at, AMOUNT] > 0 and shift_at > 5_000
    monitor = DriftMonitor(DriftConfig(topic="drift"), model.manifest)
    flags = _feed(monitor, model, data)
    assert all(seen > shift_at for seen, _, _ in flags), flags[:5]
    assert flags and flags[0][0] - shift_at <= 2_000, flags[:5]


def test_cold_start_reports_warming_up_and_never_flags() -> None:
    """Values far off the reference flag only once their windows have filled."""
    names = ("txn_amount", "card_count_1h", "card_count_24h")
    manifest = _manifest(names)
    config = DriftConfig(topic="drift", window_events=100, every_events=100)
    monitor = DriftMonitor(config, manifest)
    t0 = 1_795_392_000_000
    seen: dict[str, list[tuple[int, bool, bool]]] = {n: [] for n in (*names, "score")}
    for hour in range(30):
        times = t0 + hour * 3_600_000 + np.arange(100, dtype=np.int64) * 30_000
        # Every feature (and the score) reads 100 against a reference of 0..1.
        values = np.full((100, len(names)), 100.0)
        sample = DriftSample(manifest.model_version, names, values, np.full(100, 0.9), times)
        for stat in monitor.observe(sample, manifest):
            seen[stat.signal].append((hour, stat.warming_up, stat.drift))
    for name in (*names, "score"):
        longest = warmup_ms(name) if name != "score" else 86_400_000
        for hour, warming, drifted in seen[name]:
            # The window's oldest event is at hour:00; warm once that is the warm-up on.
            assert warming == (hour * 3_600_000 < longest), (name, hour)
            assert drifted == (not warming), (name, hour)


def test_calendar_features_are_reported_but_never_flagged() -> None:
    assert {"txn_hour_utc"} == CALENDAR_SIGNALS
    names = ("txn_hour_utc",)
    manifest = _manifest(names)
    monitor = DriftMonitor(
        DriftConfig(topic="drift", window_events=100, every_events=100), manifest
    )
    sample = DriftSample(
        manifest.model_version,
        names,
        np.full((100, 1), 23.0),
        np.full(100, 0.5),
        np.arange(100, dtype=np.int64),
    )
    (hour, _score) = monitor.observe(sample, manifest)
    assert hour.psi > 1 and hour.detector == "none" and not hour.drift


def _manifest(names: tuple[str, ...]) -> Manifest:
    uniform = {"edges": [0.25, 0.5, 0.75], "proportions": [0.25] * 4, "mean": 0.5}
    body = {
        "name": "m",
        "version": 1,
        "sha256": "0" * 64,
        "feature_names": list(names),
        "thresholds": {"review": 0.3, "decline": 0.7},
        "metrics": {},
        "reference": {"features": dict.fromkeys(names, uniform), "score": uniform},
        "training": {},
    }
    return Manifest.model_validate_json(json.dumps(body))


@pytest.fixture(scope="module")
def reference_rows() -> npt.NDArray[np.float32]:
    """Stationary feature rows past the warm-up."""
    data = _features(list(simulate_realistic(replace(STATIONARY, seed=23, days=3))))
    return data.x[data.event_times >= STATIONARY.start_ms + DAY]


def test_records_follow_the_contract(
    model: OnnxModel, reference_rows: npt.NDArray[np.float32]
) -> None:
    manifest = model.manifest
    config = DriftConfig(topic="drift", window_events=300, every_events=100)
    monitor = DriftMonitor(config, manifest)
    rows = reference_rows[:250]
    sample = DriftSample(
        manifest.model_version,
        ALL_FEATURES,
        rows.astype(np.float64),
        model.predict(rows),
        np.arange(250, dtype=np.int64) * 1000 + 1_795_392_000_000,
    )
    stats = monitor.observe(sample, manifest)
    assert len(stats) == 2 * (len(manifest.feature_names) + 1)  # two emissions in 250 events
    records = [Drift.model_validate_json(m.value) for m in drift_records(config, "v", stats)]
    kinds = {r.signal: r.kind for r in records}
    assert kinds["score"] == "score" and kinds["txn_amount"] == "feature"
    last = records[-len(manifest.feature_names) - 1 :]
    assert {r.n for r in last} == {200}
    assert last[0].window_start == "2026-11-23T00:00:00.000Z"
    assert last[0].window_end == "2026-11-23T00:03:19.000Z"
    # The window still holds the first event: only transaction-level signals are warm.
    warming = {r.signal: r.warming_up for r in last}
    assert not warming["txn_amount"] and not warming["txn_log_amount"]
    assert warming["card_count_1m"] and warming["card_count_24h"] and warming["score"]
    assert not any(r.drift for r in records if r.warming_up)


def test_batch_sizes_do_not_change_statistics_or_state(
    model: OnnxModel, reference_rows: npt.NDArray[np.float32]
) -> None:
    """Pushing a batch at once (wrapping the ring, longer than it) equals pushing row by row."""
    manifest = model.manifest
    config = DriftConfig(topic="drift", window_events=50, every_events=70, chunk_events=7)
    rows = reference_rows[:400].astype(np.float64)
    scores = model.predict(reference_rows[:400])
    # Five minutes apart: the score warms up (24 h) inside the 400 rows.
    times = np.arange(400, dtype=np.int64) * 300_000

    def run(sizes: list[int]) -> tuple[list[object], DriftMonitor]:
        monitor = DriftMonitor(config, manifest)
        stats: list[object] = []
        start = 0
        for size in sizes:
            end = start + size
            sample = DriftSample(
                manifest.model_version, ALL_FEATURES, rows[start:end], scores[start:end],
                times[start:end],
            )  # fmt: skip
            stats.extend(monitor.observe(sample, manifest))
            start = end
        return stats, monitor

    one_by_one, a = run([1] * 400)
    batched, b = run([3, 120, 49, 1, 60, 67, 100])
    assert one_by_one == batched
    assert np.array_equal(a._values, b._values)
    assert np.array_equal(a._times, b._times)
    assert (a._pos, a._filled, a._chunks) == (b._pos, b._filled, b._chunks)


def _oracle_stats(
    window: npt.NDArray[np.float64], manifest: Manifest
) -> list[tuple[float, float, float]]:
    """(mean, PSI, KS) of each signal's window on its reference's bins, one signal at a time."""
    refs = [*(manifest.reference.features[n] for n in manifest.feature_names)]
    refs.append(manifest.reference.score)
    out = []
    for values, ref in zip(np.ascontiguousarray(window.T), refs, strict=True):
        expected = np.asarray(ref.proportions, dtype=np.float64)
        index = np.searchsorted(np.asarray(ref.edges), values, side="right")
        observed = np.bincount(index, minlength=len(expected)) / max(1, len(values))
        o, e = np.maximum(observed, 1e-4), np.maximum(expected, 1e-4)
        psi = float(np.sum((o - e) * np.log(o / e)))
        ks = float(np.max(np.abs(np.cumsum(observed) - np.cumsum(expected))))
        out.append((float(values.mean()), psi, ks))
    return out


def test_statistics_equal_each_signal_computed_on_its_own() -> None:
    """Bins kept per value and one bincount per emission give every signal's own figures.

    The window is replayed in ring order (its statistics are summed in that
    order); values sit on bin edges, are NaN, and the monitor is restored from a
    pickle along the way.
    """
    manifest = load_model(
        Path(__file__).resolve().parents[3] / "models" / "artifacts" / "fraud-gbt-1"
    ).manifest
    edges = np.concatenate([manifest.reference.features[n].edges for n in manifest.feature_names])
    rng = np.random.default_rng(5)
    width = len(manifest.feature_names)
    for _ in range(6):
        config = DriftConfig(
            topic="drift",
            window_events=int(rng.integers(5, 300)),
            every_events=int(rng.integers(3, 200)),
        )
        monitor = DriftMonitor(config, manifest)
        ring = np.zeros((config.window_events, width + 1))
        seen = 0
        for _ in range(12):
            n = int(rng.integers(0, 400))
            values = rng.normal(0, 50, size=(n, len(ALL_FEATURES)))
            on_edge = rng.random(values.shape) < 0.3
            values[on_edge] = rng.choice(edges, size=int(on_edge.sum()))
            values[rng.random(values.shape) < 0.01] = np.nan
            scores = rng.random(n)
            sample = DriftSample(
                manifest.model_version, ALL_FEATURES, values, scores, np.arange(n, dtype=np.int64)
            )
            stats = monitor.observe(sample, manifest)
            cols = [ALL_FEATURES.index(s) for s in manifest.feature_names]
            rows = np.column_stack([values[:, cols], scores])
            emitted = []
            for row in rows:
                ring[seen % config.window_events] = row
                seen += 1
                if seen % config.every_events == 0:
                    filled = min(seen, config.window_events)
                    emitted.extend(_oracle_stats(ring[:filled], manifest))
            got = [(s.mean, s.psi, s.ks) for s in stats]
            assert np.array_equal(np.array(got), np.array(emitted), equal_nan=True)
            if rng.random() < 0.3:
                monitor = pickle.loads(pickle.dumps(monitor))
