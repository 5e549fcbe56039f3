"""Training: reproducible ONNX bytes, an honest manifest, and a model that separates fraud."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from models.manifest import Manifest, read_manifest
from models.onnx_scorer import load_model
from models.simulator import SimConfig
from models.train import TrainConfig, build_dataset, train
from operators.features import ALL_FEATURES

SMALL = TrainConfig(events=4_000, trees=20)


@dataclass(frozen=True)
class Trained:
    """Two runs of the same small config into two directories."""

    first: Manifest
    first_dir: Path
    second: Manifest
    second_dir: Path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    first_dir = tmp_path_factory.mktemp("first")
    second_dir = tmp_path_factory.mktemp("second")
    return Trained(train(SMALL, first_dir), first_dir, train(SMALL, second_dir), second_dir)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_config_gives_identical_onnx_bytes(trained: Trained) -> None:
    assert trained.first.sha256 == trained.second.sha256
    assert _sha256(trained.first_dir / "model.onnx") == _sha256(trained.second_dir / "model.onnx")
    assert (trained.first_dir / "manifest.json").read_bytes() == (
        trained.second_dir / "manifest.json"
    ).read_bytes()


def test_manifest_sha256_matches_the_written_file(trained: Trained) -> None:
    on_disk = read_manifest(trained.first_dir)
    assert on_disk == trained.first
    assert on_disk.sha256 == _sha256(trained.first_dir / on_disk.onnx_file)


def test_manifest_describes_the_model(trained: Trained) -> None:
    manifest = trained.first
    assert manifest.model_version == "fraud-gbt-1"
    assert manifest.feature_names == list(ALL_FEATURES)
    assert set(manifest.reference.features) == set(ALL_FEATURES)
    assert manifest.training["events"] == 4_000
    assert manifest.training["trees"] == 20
    assert manifest.metrics["train_rows"] + manifest.metrics["test_rows"] == 4_000
    for dist in [manifest.reference.score, *manifest.reference.features.values()]:
        assert sum(dist.proportions) == pytest.approx(1.0, abs=1e-4)
        assert dist.edges == sorted(dist.edges)


def test_held_out_auc_is_good(trained: Trained) -> None:
    assert trained.first.metrics["auc"] > 0.8


def test_model_beats_the_rules_fallback_on_the_same_split(trained: Trained) -> None:
    assert trained.first.metrics["auc"] > trained.first.metrics["rules_auc"]


def test_committed_model_beats_the_rules_fallback() -> None:
    committed = read_manifest(Path(__file__).resolve().parents[3] / "models/artifacts/fraud-gbt-1")
    assert committed.metrics["auc"] > committed.metrics["rules_auc"] + 0.05


def test_trained_model_loads_and_agrees_with_the_training_data(trained: Trained) -> None:
    model = load_model(trained.first_dir)
    x, y = build_dataset(SimConfig(seed=SMALL.seed), SMALL.events)
    assert x.shape == (SMALL.events, len(ALL_FEATURES))
    probs = model.predict(x)
    assert np.all((probs >= 0.0) & (probs <= 1.0))
    assert probs[y == 1].mean() > probs[y == 0].mean()
