"""Drift monitor: raised soon after a shift, silent on a long stationary stream."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from models.manifest import Manifest
from models.onnx_scorer import OnnxModel, load_model
from models.simulator import SimConfig
from models.train import TrainConfig, build_dataset, train
from operators.drift import DriftConfig, DriftMonitor, DriftSample, drift_records
from operators.features import ALL_FEATURES
from schemas.records import Drift

SMALL = TrainConfig(events=6_000, trees=30)
AMOUNT_COLUMNS = [i for i, n in enumerate(ALL_FEATURES) if n in ("txn_amount",)]
LOG_AMOUNT = ALL_FEATURES.index("txn_log_amount")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[OnnxModel, npt.NDArray[np.float32]]:
    """A small model and the training rows its reference distributions came from."""
    out = tmp_path_factory.mktemp("model")
    train(SMALL, out)
    x, _ = build_dataset(SimConfig(seed=SMALL.seed), SMALL.events)
    return load_model(Path(out)), x[: int(len(x) * 0.8)]


def _feed(
    monitor: DriftMonitor, manifest: Manifest, model: OnnxModel, rows: npt.NDArray[np.float32]
) -> list[tuple[int, str]]:
    """Feed rows in batches of 100; return (events seen, signal) for every drift flag."""
    flags = []
    for start in range(0, len(rows), 100):
        batch = rows[start : start + 100]
        sample = DriftSample(
            model_version=manifest.model_version,
            names=ALL_FEATURES,
            values=batch.astype(np.float64),
            scores=model.predict(batch),
            event_times=np.arange(start, start + len(batch), dtype=np.int64) * 1000,
        )
        for stat in monitor.observe(sample, manifest):
            if stat.drift:
                flags.append((start + len(batch), stat.signal))
    return flags


def test_no_drift_on_100k_stationary_events(
    trained: tuple[OnnxModel, npt.NDArray[np.float32]],
) -> None:
    model, reference_rows = trained
    manifest = model.manifest
    rng = np.random.default_rng(1)
    rows = reference_rows[rng.integers(0, len(reference_rows), 100_000)]
    monitor = DriftMonitor(DriftConfig(topic="drift"), manifest)
    assert _feed(monitor, manifest, model, rows) == []


def test_amount_shift_is_flagged_within_2000_events(
    trained: tuple[OnnxModel, npt.NDArray[np.float32]],
) -> None:
    model, reference_rows = trained
    manifest = model.manifest
    rng = np.random.default_rng(2)
    rows = reference_rows[rng.integers(0, len(reference_rows), 20_000)].copy()
    shift_at = 10_000
    rows[shift_at:, AMOUNT_COLUMNS] *= 4
    rows[shift_at:, LOG_AMOUNT] = np.log1p(rows[shift_at:, AMOUNT_COLUMNS[0]])
    monitor = DriftMonitor(DriftConfig(topic="drift"), manifest)
    flags = _feed(monitor, manifest, model, rows)
    assert all(seen > shift_at for seen, _ in flags), flags[:5]
    amount = [seen for seen, signal in flags if signal == "txn_amount"]
    assert amount and amount[0] - shift_at <= 2_000


def test_records_follow_the_contract(trained: tuple[OnnxModel, npt.NDArray[np.float32]]) -> None:
    model, reference_rows = trained
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


def test_batch_sizes_do_not_change_statistics_or_state(
    trained: tuple[OnnxModel, npt.NDArray[np.float32]],
) -> None:
    """Pushing a batch at once (wrapping the ring, longer than it) equals pushing row by row."""
    model, reference_rows = trained
    manifest = model.manifest
    config = DriftConfig(topic="drift", window_events=50, every_events=70, chunk_events=7)
    rows = reference_rows[:400].astype(np.float64)
    scores = model.predict(reference_rows[:400])
    times = np.arange(400, dtype=np.int64) * 1000

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
