"""Training: recorded history -> features -> gradient-boosted model -> ONNX + manifest + report.

Features come from running the history (:mod:`models.history`) through the
service's own flow in this process (:func:`flows.testing.run_log`: the
``build_flow`` that serves, with an in-memory source and sink) with the
service's time settings, and are read from the scores it emits: there is no
second feature implementation or wiring to drift from the one that serves,
and a record the service would dead-letter is left out here too. Features do
not depend on the model that scores them, so the flow runs with the committed
model whatever model is being trained.

Labels: a transaction is fraud when a chargeback names it (``txn_event_id``)
within ``label_horizon_ms`` of its event time. Rows are kept when both their
features and their label are final: at least ``warmup_ms`` (the longest
feature window) after the history starts, and at least the label horizon
before labels stop being looked for. The split is by event time (the first
``train_share`` of that span trains, the rest is held out), as the model will
meet the future, not a shuffle of the past. The drift reference is the
training rows' distributions: steady state, since warm-up rows are left out.
The same history and config give the same ONNX bytes.
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

from flows.testing import run_log
from models.evaluation import evaluate, write_report_png
from models.history import Recorded
from models.manifest import (
    MANIFEST_FILE,
    Distribution,
    Evaluation,
    Manifest,
    Reference,
    Thresholds,
)
from models.rules import rules_scores
from models.simulator import SimConfig, simulate, to_replay_records
from operators.card_features import DAY
from operators.features import ALL_FEATURES
from operators.watermarks import TimeConfig
from schemas.errors import TrainingError
from schemas.records import Chargeback

REFERENCE_BINS = 10
REPORT_FILE = "evaluation.png"


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How to label, split and fit."""

    name: str = "fraud-gbt"
    version: int = 1
    seed: int = 11
    trees: int = 150
    depth: int = 3
    learning_rate: float = 0.1
    review_threshold: float = 0.3
    decline_threshold: float = 0.7
    label_horizon_ms: int = 14 * DAY
    warmup_ms: int = DAY
    train_share: float = 0.75
    review_budget: int = 10  # cards an analyst team reviews a day


@dataclass(frozen=True)
class Dataset:
    """Feature rows (``ALL_FEATURES`` order) in scoring order, with labels and who/when."""

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int8]
    event_times: npt.NDArray[np.int64]
    cards: list[str]
    dead_letters: int


def dataset(recorded: Recorded, *, time: TimeConfig, label_horizon_ms: int) -> Dataset:
    """Run the history through the serving flow; label rows from the chargebacks."""
    first_label: dict[str, int] = {}
    for value in recorded.label_chargebacks:
        try:
            cb = Chargeback.model_validate_json(value)
        except ValueError:
            continue  # the service dead-letters it too; it labels nothing
        known = first_label.get(cb.txn_event_id)
        if known is None or cb.event_time < known:
            first_label[cb.txn_event_id] = cb.event_time
    result = run_log(recorded.records, time=time, batch_size=1_000)
    rows: list[list[float]] = []
    labels: list[int] = []
    times: list[int] = []
    cards: list[str] = []
    for row in result.rows:
        feats = row.features
        rows.append([feats[name] for name in ALL_FEATURES])
        filed = first_label.get(row.event_id)
        labels.append(int(filed is not None and 0 <= filed - row.event_time <= label_horizon_ms))
        times.append(row.event_time)
        cards.append(row.card_id)
    return Dataset(
        np.asarray(rows, dtype=np.float32).reshape(-1, len(ALL_FEATURES)),
        np.asarray(labels, dtype=np.int8),
        np.asarray(times, dtype=np.int64),
        cards,
        len(result.dead_letters),
    )


def build_dataset(
    sim: SimConfig, events: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int8]]:
    """Features and true fraud flags of the dense simulator's traffic, in scoring order."""
    log = list(simulate(sim, events))
    fraud = {e.payload["event_id"]: e.fraud for e in log if e.kind == "transaction"}
    result = run_log(to_replay_records(log), batch_size=500)
    rows = [[row.features[name] for name in ALL_FEATURES] for row in result.rows]
    y = [int(fraud[row.event_id]) for row in result.rows]
    return np.asarray(rows, dtype=np.float32), np.asarray(y, dtype=np.int8)


@dataclass(frozen=True)
class Split:
    """Row masks of the training and held-out parts, and the event-time cut between them."""

    train: npt.NDArray[np.bool_]
    test: npt.NDArray[np.bool_]
    first_ms: int
    cut_ms: int
    last_ms: int


def split(data: Dataset, config: TrainConfig, labels_through_ms: int) -> Split:
    """Rows with final features and labels, cut by event time; raise when a part is unusable."""
    if not len(data.y):
        raise TrainingError("the history has no valid transactions")
    first = int(data.event_times.min()) + config.warmup_ms
    last = labels_through_ms - config.label_horizon_ms
    if last <= first:
        days = (labels_through_ms - int(data.event_times.min())) / DAY
        need = (config.warmup_ms + config.label_horizon_ms) / DAY
        raise TrainingError(
            f"the history spans {days:.1f} days; features need {config.warmup_ms / DAY:g} "
            f"and labels {config.label_horizon_ms / DAY:g} more (--label-horizon-days): "
            f"record more than {need:g} days"
        )
    cut = first + round((last - first) * config.train_share)
    t = data.event_times
    train_rows = (t >= first) & (t < cut)
    test_rows = (t >= cut) & (t <= last)
    for name, rows in (("training", train_rows), ("held-out", test_rows)):
        frauds = int(data.y[rows].sum())
        if frauds < 2 or frauds == int(rows.sum()):
            raise TrainingError(
                f"the {name} part has {int(rows.sum())} transactions and {frauds} labelled "
                "fraud: it needs both classes (more history, or a longer label horizon)"
            )
    return Split(train_rows, test_rows, first, cut, last)


def train(
    config: TrainConfig,
    out_dir: Path,
    recorded: Recorded,
    *,
    time: TimeConfig | None = None,
    report: bool = True,
) -> Manifest:
    """Train on ``recorded``; write ``model.onnx``, ``manifest.json`` (and the PNG report)."""
    time = time or TimeConfig()
    data = dataset(recorded, time=time, label_horizon_ms=config.label_horizon_ms)
    parts = split(data, config, recorded.labels_through_ms)
    x_train, y_train = data.x[parts.train], data.y[parts.train]
    x_test, y_test = data.x[parts.test], data.y[parts.test]
    model = GradientBoostingClassifier(
        n_estimators=config.trees,
        max_depth=config.depth,
        learning_rate=config.learning_rate,
        random_state=config.seed,
    ).fit(x_train, y_train)
    onnx_model = to_onnx(
        model,
        initial_types=[("features", FloatTensorType([None, len(ALL_FEATURES)]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    blob = onnx_model.SerializeToString()
    thresholds = Thresholds(review=config.review_threshold, decline=config.decline_threshold)
    held_out = model.predict_proba(x_test)[:, 1].astype(np.float64)
    test_feature_rows = [dict(zip(ALL_FEATURES, row, strict=True)) for row in x_test.tolist()]
    rules = np.asarray(rules_scores(test_feature_rows), dtype=np.float64)
    test_cards = [c for c, keep in zip(data.cards, parts.test.tolist(), strict=True) if keep]
    evaluation = evaluate(
        y_test,
        held_out,
        rules,
        event_times=data.event_times[parts.test],
        cards=test_cards,
        review=thresholds.review,
        decline=thresholds.decline,
        k=config.review_budget,
    )
    train_scores = model.predict_proba(x_train)[:, 1]
    reference = Reference(
        features={n: _distribution(x_train[:, i]) for i, n in enumerate(ALL_FEATURES)},
        score=_distribution(train_scores),
    )
    training: dict[str, float | int | str] = {
        k: v
        for k, v in asdict(config).items()
        if k not in ("name", "version") and isinstance(v, float | int | str)
    }
    training.update(
        source=recorded.source,
        rows=len(data.y),
        dead_letters=data.dead_letters,
        train_from_ms=parts.first_ms,
        split_at_ms=parts.cut_ms,
        test_until_ms=parts.last_ms,
    )
    manifest = Manifest(
        name=config.name,
        version=config.version,
        sha256=hashlib.sha256(blob).hexdigest(),
        feature_names=list(ALL_FEATURES),
        thresholds=thresholds,
        metrics=_headline(evaluation, y_train),
        reference=reference,
        training=training,
        evaluation=evaluation,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / manifest.onnx_file).write_bytes(blob)
    text = json.dumps(manifest.model_dump(mode="json", exclude_none=True), indent=2, sort_keys=True)
    (out_dir / MANIFEST_FILE).write_text(text + "\n")
    if report:
        write_report_png(
            out_dir / REPORT_FILE,
            evaluation,
            y_test,
            held_out,
            rules,
            title=f"{manifest.model_version} vs the rules fallback ({recorded.source})",
        )
    return manifest


def _headline(evaluation: Evaluation, y_train: npt.NDArray[np.int8]) -> dict[str, float]:
    """The flat metrics every manifest carries: the model's, the rules' beside them."""
    metrics: dict[str, float] = {}
    for prefix, scorer in (("", evaluation.model), ("rules_", evaluation.rules)):
        for name, value in scorer.model_dump().items():
            metrics[prefix + name] = value
    metrics.update(
        fraud_share=float(y_train.mean()),
        train_rows=float(len(y_train)),
        test_rows=float(evaluation.test_rows),
        test_frauds=float(evaluation.test_frauds),
        review_budget=float(evaluation.review_budget),
    )
    return metrics


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
