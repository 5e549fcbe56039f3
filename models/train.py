"""Training: simulated labelled traffic -> features -> gradient-boosted model -> ONNX + manifest.

Features come from replaying the simulated log through
:func:`operators.replay.replay`, the same decode, watermark, card and
merchant operators the live flow runs, plus :mod:`operators.features` for the
transaction features: there is no second feature implementation to drift
from the one that serves. The
split is by time (first 80 % train, last 20 % held out), as the model will
meet the future, not a shuffle of the past. The same config gives the same
ONNX bytes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from models.manifest import MANIFEST_FILE, Distribution, Manifest, Reference, Thresholds
from models.rules import rules_scores
from models.simulator import SimConfig, simulate, to_replay_records
from operators.features import ALL_FEATURES, txn_features
from operators.replay import replay
from schemas.records import Transaction

REFERENCE_BINS = 10


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """What to simulate and how to fit."""

    name: str = "fraud-gbt"
    version: int = 1
    seed: int = 11
    events: int = 60_000
    trees: int = 120
    depth: int = 3
    review_threshold: float = 0.3
    decline_threshold: float = 0.7


def build_dataset(
    sim: SimConfig, events: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int8]]:
    """Feature matrix (columns in ``ALL_FEATURES`` order) and fraud labels, in scoring order."""
    log = list(simulate(sim, events))
    txns = {
        e.payload["event_id"]: (Transaction.model_validate(e.payload), e.fraud)
        for e in log
        if e.kind == "transaction"
    }
    rows: list[list[float]] = []
    labels: list[int] = []
    for row in replay(to_replay_records(log), batch_size=500).rows:
        txn, fraud = txns[row.event_id]
        feats = {**row.features, **txn_features(txn)}
        rows.append([feats[name] for name in ALL_FEATURES])
        labels.append(int(fraud))
    return np.asarray(rows, dtype=np.float32), np.asarray(labels, dtype=np.int8)


def train(config: TrainConfig, out_dir: Path) -> Manifest:
    """Train, export ``model.onnx`` and ``manifest.json`` into ``out_dir``, return the manifest."""
    x, y = build_dataset(SimConfig(seed=config.seed), config.events)
    cut = int(len(y) * 0.8)
    model = GradientBoostingClassifier(
        n_estimators=config.trees, max_depth=config.depth, random_state=config.seed
    ).fit(x[:cut], y[:cut])
    onnx_model = to_onnx(
        model,
        initial_types=[("features", FloatTensorType([None, len(ALL_FEATURES)]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    blob = onnx_model.SerializeToString()
    held_out = model.predict_proba(x[cut:])[:, 1]
    thresholds = Thresholds(review=config.review_threshold, decline=config.decline_threshold)
    declined = held_out >= thresholds.decline
    reviewed = held_out >= thresholds.review
    test_rows = [dict(zip(ALL_FEATURES, row, strict=True)) for row in x[cut:].tolist()]
    rules = np.asarray(rules_scores(test_rows))
    metrics = {
        "auc": float(roc_auc_score(y[cut:], held_out)),
        "precision_at_decline": float(precision_score(y[cut:], declined, zero_division=0)),
        "recall_at_decline": float(recall_score(y[cut:], declined, zero_division=0)),
        "precision_at_review": float(precision_score(y[cut:], reviewed, zero_division=0)),
        "recall_at_review": float(recall_score(y[cut:], reviewed, zero_division=0)),
        # The rules fallback on the same held-out split, for comparison.
        "rules_auc": float(roc_auc_score(y[cut:], rules)),
        "rules_recall_at_decline": float(
            recall_score(y[cut:], rules >= thresholds.decline, zero_division=0)
        ),
        "fraud_share": float(y.mean()),
        "train_rows": float(cut),
        "test_rows": float(len(y) - cut),
    }
    train_scores = model.predict_proba(x[:cut])[:, 1]
    reference = Reference(
        features={n: _distribution(x[:cut, i]) for i, n in enumerate(ALL_FEATURES)},
        score=_distribution(train_scores),
    )
    manifest = Manifest(
        name=config.name,
        version=config.version,
        sha256=hashlib.sha256(blob).hexdigest(),
        feature_names=list(ALL_FEATURES),
        thresholds=thresholds,
        metrics=metrics,
        reference=reference,
        training={k: v for k, v in asdict(config).items() if k not in ("name", "version")},
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / manifest.onnx_file).write_bytes(blob)
    text = json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True)
    (out_dir / MANIFEST_FILE).write_text(text + "\n")
    return manifest


def _distribution(values: npt.NDArray[np.floating]) -> Distribution:
    """Quantile bins of the training values (ties collapse), with each bin's share."""
    qs = np.quantile(values, np.linspace(0, 1, REFERENCE_BINS + 1)[1:-1])
    edges = sorted({round(float(q), 6) for q in qs})
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return Distribution(
        edges=edges,
        proportions=[round(float(c) / len(values), 6) for c in counts],
        mean=round(float(values.mean()), 6),
    )
