"""Verified ONNX loading: integrity, malformed files, input width, and inference."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import GradientBoostingClassifier

from models.manifest import MANIFEST_FILE, read_manifest
from models.onnx_scorer import load_model
from schemas.errors import ModelError, ModelIntegrityError

COMMITTED = Path(__file__).resolve().parents[3] / "models" / "artifacts" / "fraud-gbt-1"


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A private copy of the committed model directory."""
    copy = tmp_path / "fraud-gbt-1"
    shutil.copytree(COMMITTED, copy)
    return copy


def _replace_onnx(model_dir: Path, blob: bytes, feature_names: list[str] | None = None) -> None:
    """Swap in other ONNX bytes, make the manifest's sha256 match, optionally set its features."""
    (model_dir / "model.onnx").write_bytes(blob)
    path = model_dir / MANIFEST_FILE
    manifest: dict[str, Any] = json.loads(path.read_text())
    manifest["sha256"] = hashlib.sha256(blob).hexdigest()
    if feature_names is not None:
        manifest["feature_names"] = feature_names
    path.write_text(json.dumps(manifest))


def _rows(names: list[str], *rows: dict[str, float]) -> np.ndarray[Any, Any]:
    """A float32 matrix in the model's input order; features a row does not name are 0."""
    return np.asarray([[row.get(n, 0.0) for n in names] for row in rows], dtype=np.float32)


def _txn_row(amount: float, *, hour: float, ecom: float, device: float) -> dict[str, float]:
    return {
        "txn_amount": amount,
        "txn_log_amount": math.log1p(amount),
        "txn_hour_utc": hour,
        "txn_is_ecom": ecom,
        "txn_has_device": device,
        "card_count_1m": 1.0,
        "card_count_5m": 1.0,
        "card_count_1h": 1.0,
        "card_count_24h": 1.0,
        "card_seconds_since_last": -1.0,
        "card_session_count": 1.0,
    }


ROWS = (
    _txn_row(10.0, hour=12, ecom=0, device=1),
    _txn_row(5_000.0, hour=3, ecom=1, device=0),
    _txn_row(0.0, hour=0, ecom=0, device=0),
    _txn_row(1e9, hour=23, ecom=1, device=1),
)
FIVE = ["f0", "f1", "f2", "f3", "f4"]


def test_committed_model_loads_and_predicts_probabilities() -> None:
    model = load_model(COMMITTED)
    assert model.manifest == read_manifest(COMMITTED)
    assert model.manifest.model_version == "fraud-gbt-1"
    probs = model.predict(_rows(model.manifest.feature_names, *ROWS))
    assert probs.shape == (len(ROWS),)
    assert probs.dtype == np.float64
    assert np.all((probs >= 0.0) & (probs <= 1.0))
    assert len(set(probs.tolist())) > 1


def test_predictions_are_per_row_and_deterministic() -> None:
    model = load_model(COMMITTED)
    x = _rows(model.manifest.feature_names, *ROWS)
    batch = model.predict(x)
    one_by_one = np.concatenate([model.predict(x[i : i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(batch, one_by_one, rtol=1e-6)
    np.testing.assert_array_equal(batch, load_model(COMMITTED).predict(x))


def test_empty_batch_predicts_nothing() -> None:
    model = load_model(COMMITTED)
    width = len(model.manifest.feature_names)
    assert model.predict(np.zeros((0, width), dtype=np.float32)).shape == (0,)


@pytest.mark.parametrize("where", [0, 1000, -1])
def test_one_altered_byte_is_an_integrity_error(model_dir: Path, where: int) -> None:
    path = model_dir / "model.onnx"
    blob = bytearray(path.read_bytes())
    blob[where] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        load_model(model_dir)


def test_missing_onnx_file_is_a_model_error(model_dir: Path) -> None:
    (model_dir / "model.onnx").unlink()
    with pytest.raises(ModelError, match="cannot read ONNX file"):
        load_model(model_dir)


@pytest.mark.parametrize("keep", [0, 16, 1000, 30_000])
def test_truncated_onnx_with_matching_sha256_is_a_model_error(model_dir: Path, keep: int) -> None:
    blob = (model_dir / "model.onnx").read_bytes()
    assert keep < len(blob)
    _replace_onnx(model_dir, blob[:keep])
    with pytest.raises(ModelError) as info:
        load_model(model_dir)
    assert not isinstance(info.value, ModelIntegrityError)


def test_garbage_onnx_with_matching_sha256_is_a_model_error(model_dir: Path) -> None:
    _replace_onnx(model_dir, b"this is not an ONNX protobuf at all" * 10)
    with pytest.raises(ModelError, match="malformed ONNX model"):
        load_model(model_dir)


def _tiny_onnx(n_features: int) -> bytes:
    """A small gradient-boosted model over ``n_features`` inputs, exported like models.train."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, n_features)).astype(np.float32)
    y = (x[:, 0] + 0.3 * rng.normal(size=200) > 0).astype(np.int8)
    model = GradientBoostingClassifier(n_estimators=5, max_depth=2, random_state=0).fit(x, y)
    onnx_model = to_onnx(
        model,
        initial_types=[("features", FloatTensorType([None, n_features]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    blob: bytes = onnx_model.SerializeToString()
    return blob


def test_input_width_different_from_manifest_is_a_model_error(model_dir: Path) -> None:
    _replace_onnx(model_dir, _tiny_onnx(3), feature_names=FIVE)
    assert len(read_manifest(model_dir).feature_names) == 5
    with pytest.raises(ModelError, match=r"\[n, 5\]"):
        load_model(model_dir)


def test_model_of_matching_width_loads(model_dir: Path) -> None:
    # The same export path with the manifest's width works, so the test above
    # fails for the width and nothing else.
    _replace_onnx(model_dir, _tiny_onnx(5), feature_names=FIVE)
    model = load_model(model_dir)
    probs = model.predict(np.zeros((3, 5), dtype=np.float32))
    assert probs.shape == (3,)
    assert np.all((probs >= 0.0) & (probs <= 1.0))


def _one_node_onnx(
    op: str, in_shape: list[int | None] | None, out_shape: list[int | None] | None, **attrs: Any
) -> bytes:
    """A one-node float graph, for inputs and outputs that no classifier export produces."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], **attrs)], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    blob: bytes = model.SerializeToString()
    return blob


def test_model_without_class_probabilities_is_a_model_error(model_dir: Path) -> None:
    # Right input width, but one number per row instead of [n, 2] class probabilities.
    _replace_onnx(
        model_dir,
        _one_node_onnx("ReduceMax", [None, 5], [None], axes=[1], keepdims=0),
        feature_names=FIVE,
    )
    with pytest.raises(ModelError, match="probe input"):
        load_model(model_dir)


def test_integer_input_is_a_model_error(model_dir: Path) -> None:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.INT64, [None, 5])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [None, 5])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    _replace_onnx(model_dir, model.SerializeToString(), feature_names=FIVE)
    with pytest.raises(ModelError, match="float tensor"):
        load_model(model_dir)


@pytest.mark.parametrize(
    "shape", [[], [5], [None, 1, 5], None], ids=["scalar", "rank-1", "rank-3", "no-shape"]
)
def test_input_not_a_matrix_is_a_model_error(
    model_dir: Path, shape: list[int | None] | None
) -> None:
    _replace_onnx(model_dir, _one_node_onnx("Identity", shape, shape), feature_names=FIVE)
    with pytest.raises(ModelError):
        load_model(model_dir)
