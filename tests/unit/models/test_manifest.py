"""Manifest validation and decision thresholds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from models.manifest import MANIFEST_FILE, Thresholds, read_manifest
from schemas.errors import ModelError

COMMITTED = Path(__file__).resolve().parents[3] / "models" / "artifacts" / "fraud-gbt-1"


@pytest.mark.parametrize(
    ("score", "decision"),
    [
        (0.0, "approve"),
        (0.2999, "approve"),
        (0.3, "review"),
        (0.5, "review"),
        (0.6999, "review"),
        (0.7, "decline"),
        (1.0, "decline"),
    ],
)
def test_decide_boundaries(score: float, decision: str) -> None:
    assert Thresholds(review=0.3, decline=0.7).decide(score) == decision


def test_equal_thresholds_never_review() -> None:
    thresholds = Thresholds(review=0.5, decline=0.5)
    assert thresholds.decide(0.4999) == "approve"
    assert thresholds.decide(0.5) == "decline"


@pytest.mark.parametrize(
    ("review", "decline"), [(0.7, 0.3), (-0.1, 0.5), (0.3, 1.1)], ids=["order", "low", "high"]
)
def test_bad_thresholds_are_rejected(review: float, decline: float) -> None:
    with pytest.raises(ValidationError):
        Thresholds(review=review, decline=decline)


def test_committed_manifest_reads() -> None:
    manifest = read_manifest(COMMITTED)
    assert manifest.model_version == "fraud-gbt-1"
    assert manifest.onnx_file == "model.onnx"
    assert len(manifest.feature_names) == len(set(manifest.feature_names))
    assert set(manifest.reference.features) == set(manifest.feature_names)


def test_missing_manifest_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot read model manifest"):
        read_manifest(tmp_path)


@pytest.mark.parametrize(
    ("old", "new"),
    [('"version": 1', '"version": 0'), ('"sha256": "', '"sha256": "X'), ("{", "")],
    ids=["version", "sha256", "not-json"],
)
def test_invalid_manifest_is_a_model_error(tmp_path: Path, old: str, new: str) -> None:
    shutil.copytree(COMMITTED, tmp_path / "m")
    path = tmp_path / "m" / MANIFEST_FILE
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ModelError, match="invalid model manifest"):
        read_manifest(tmp_path / "m")


@pytest.mark.parametrize(
    "edges", [[2.0, 1.0, 3.0], [1.0, 1.0, 3.0]], ids=["decreasing", "repeated"]
)
def test_reference_edges_must_increase(tmp_path: Path, edges: list[float]) -> None:
    # Drift bins a value by binary search over the edges.
    shutil.copytree(COMMITTED, tmp_path / "m")
    path = tmp_path / "m" / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    reference = manifest["reference"]["features"]["txn_amount"]
    reference["edges"] = edges
    reference["proportions"] = [0.25] * 4
    path.write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="strictly increasing"):
        read_manifest(tmp_path / "m")
