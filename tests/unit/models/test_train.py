"""Training on recorded history: reproducible bytes, honest labels and split, a readable report."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from models.history import Recorded, from_jsonl, from_simulation
from models.manifest import Manifest, read_manifest
from models.onnx_scorer import load_model
from models.realistic import RealisticConfig, simulate_realistic
from models.train import REPORT_FILE, TrainConfig, dataset, split, train
from operators.card_features import DAY
from operators.features import ALL_FEATURES
from operators.watermarks import TimeConfig
from schemas.errors import TrainingError

SIM = RealisticConfig(
    cards=500, days=12, fraud_share=0.01, chargeback_delay_days=1.0, max_chargeback_delay_days=2.0
)
SMALL = TrainConfig(trees=20, label_horizon_ms=2 * DAY)
# A 500-card population goes quiet for over an hour some nights (see docs/training.md).
TIME = TimeConfig(max_future_ms=2 * DAY)
COMMITTED = Path(__file__).resolve().parents[3] / "models" / "artifacts" / "fraud-gbt-1"


@dataclass(frozen=True)
class Trained:
    """Two runs of the same small config into two directories."""

    first: Manifest
    first_dir: Path
    second: Manifest
    second_dir: Path


@pytest.fixture(scope="module")
def recorded() -> Recorded:
    return from_simulation(simulate_realistic(SIM), "test")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, recorded: Recorded) -> Trained:
    first_dir = tmp_path_factory.mktemp("first")
    second_dir = tmp_path_factory.mktemp("second")
    first = train(SMALL, first_dir, recorded, time=TIME)
    second = train(SMALL, second_dir, recorded, time=TIME, report=False)
    return Trained(first, first_dir, second, second_dir)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_history_gives_identical_onnx_and_manifest(trained: Trained) -> None:
    assert trained.first.sha256 == trained.second.sha256
    assert _sha256(trained.first_dir / "model.onnx") == _sha256(trained.second_dir / "model.onnx")
    assert (trained.first_dir / "manifest.json").read_bytes() == (
        trained.second_dir / "manifest.json"
    ).read_bytes()


def test_manifest_sha256_matches_the_written_file(trained: Trained) -> None:
    on_disk = read_manifest(trained.first_dir)
    assert on_disk == trained.first
    assert on_disk.sha256 == _sha256(trained.first_dir / on_disk.onnx_file)


def test_manifest_describes_the_model_and_its_evaluation(trained: Trained) -> None:
    manifest = trained.first
    assert manifest.model_version == "fraud-gbt-1"
    assert manifest.feature_names == list(ALL_FEATURES)
    assert set(manifest.reference.features) == set(ALL_FEATURES)
    assert manifest.training["trees"] == 20
    assert manifest.training["source"] == "test"
    evaluation = manifest.evaluation
    assert evaluation is not None
    assert evaluation.review_budget == SMALL.review_budget
    assert evaluation.test_frauds > 0
    assert manifest.metrics["test_rows"] == evaluation.test_rows
    for scorer in (evaluation.model, evaluation.rules):
        for value in scorer.model_dump().values():
            assert 0.0 <= value <= 1.0
    assert manifest.metrics["average_precision"] == evaluation.model.average_precision
    assert manifest.metrics["rules_average_precision"] == evaluation.rules.average_precision
    assert sum(b.count for b in evaluation.calibration) == evaluation.test_rows
    for dist in [manifest.reference.score, *manifest.reference.features.values()]:
        assert sum(dist.proportions) == pytest.approx(1.0, abs=1e-4)
        assert dist.edges == sorted(dist.edges)


def test_the_report_png_is_written(trained: Trained) -> None:
    png = (trained.first_dir / REPORT_FILE).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert not (trained.second_dir / REPORT_FILE).exists()


def test_labels_come_from_chargebacks_within_the_horizon(recorded: Recorded) -> None:
    data = dataset(recorded, time=TIME, label_horizon_ms=SMALL.label_horizon_ms)
    cbs = [json.loads(v) for v in recorded.label_chargebacks]
    assert data.y.sum() == len({c["txn_event_id"] for c in cbs})  # delays are under 2 days
    none = dataset(recorded, time=TIME, label_horizon_ms=DAY // 4)
    assert none.y.sum() == 0  # no chargeback comes within 6 hours


def test_split_is_by_time_after_the_warm_up_and_before_immature_labels(
    recorded: Recorded,
) -> None:
    data = dataset(recorded, time=TIME, label_horizon_ms=SMALL.label_horizon_ms)
    parts = split(data, SMALL, recorded.labels_through_ms)
    train_times = data.event_times[parts.train]
    test_times = data.event_times[parts.test]
    assert train_times.max() < test_times.min()
    assert train_times.min() >= data.event_times.min() + DAY
    assert test_times.max() <= recorded.labels_through_ms - SMALL.label_horizon_ms
    assert not np.any(parts.train & parts.test)


def test_too_short_a_history_is_a_clear_error(recorded: Recorded) -> None:
    data = dataset(recorded, time=TIME, label_horizon_ms=SMALL.label_horizon_ms)
    long_horizon = TrainConfig(label_horizon_ms=14 * DAY)
    with pytest.raises(TrainingError, match="record more than 15 days"):
        split(data, long_horizon, recorded.labels_through_ms)


def test_jsonl_history_gives_the_same_rows_and_labels(tmp_path: Path, recorded: Recorded) -> None:
    txns = tmp_path / "transactions.jsonl"
    cbs = tmp_path / "chargebacks.jsonl"
    txns.write_bytes(b"\n".join(r.value for r in recorded.records if r.kind == "transaction"))
    cbs.write_bytes(b"\n".join(r.value for r in recorded.records if r.kind == "chargeback"))
    from_files = from_jsonl(txns, cbs)
    # Each file keeps its order; the two are merged by event time.
    for kind in ("transaction", "chargeback"):
        got = [r.value for r in from_files.records if r.kind == kind]
        assert got == [r.value for r in recorded.records if r.kind == kind]
    times = [r.timestamp_ms for r in from_files.records]
    assert from_files.labels_through_ms == max(times)
    want = dataset(recorded, time=TIME, label_horizon_ms=SMALL.label_horizon_ms)
    got_data = dataset(from_files, time=TIME, label_horizon_ms=SMALL.label_horizon_ms)
    assert got_data.cards == want.cards
    assert np.array_equal(got_data.y, want.y)


def test_unreadable_history_is_a_training_error(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="cannot read"):
        from_jsonl(tmp_path / "missing.jsonl", None)


def test_trained_model_loads_and_ranks_fraud_higher(trained: Trained, recorded: Recorded) -> None:
    model = load_model(trained.first_dir)
    data = dataset(recorded, time=TIME, label_horizon_ms=SMALL.label_horizon_ms)
    probs = model.predict(data.x)
    assert np.all((probs >= 0.0) & (probs <= 1.0))
    assert probs[data.y == 1].mean() > 5 * probs[data.y == 0].mean()


def test_committed_model_comes_from_weeks_of_realistic_history() -> None:
    committed = read_manifest(COMMITTED)
    assert str(committed.training["source"]).startswith("realistic-sim:")
    days = int(committed.training["test_until_ms"]) - int(committed.training["train_from_ms"])
    assert days / DAY >= 21
    assert committed.evaluation is not None
    assert committed.metrics["fraud_share"] < 0.005


def test_committed_model_beats_the_rules_fallback_by_a_margin() -> None:
    evaluation = read_manifest(COMMITTED).evaluation
    assert evaluation is not None
    model, rules = evaluation.model, evaluation.rules
    assert model.average_precision > rules.average_precision + 0.1
    assert model.card_precision_at_k > rules.card_precision_at_k
