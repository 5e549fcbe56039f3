"""Held-out evaluation of a fraud scorer as fraud teams read it, model and rules side by side.

On imbalanced data AUC says little: a model can rank well overall and still
bury the few frauds among thousands of alerts. So the report leads with
average precision (the area under the precision-recall curve), precision and
recall at the manifest's decision thresholds, and *card precision at k*: each
day, an analyst team reviews the ``k`` cards with the highest score that day;
the share of those cards that had a (labelled) fraud that day, averaged over
the days. Calibration (the observed fraud rate per score bin, and the Brier
score) says whether a score can be read as a probability.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)

from models.manifest import CalibrationBin, Evaluation, ScorerMetrics

DAY_MS = 86_400_000
# Score bins of the calibration table: fine where fraud scores mostly fall.
CALIBRATION_EDGES = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)


def scorer_metrics(
    y: npt.NDArray[np.int8],
    scores: npt.NDArray[np.float64],
    *,
    review: float,
    decline: float,
    days: npt.NDArray[np.int64],
    cards: list[str],
    k: int,
) -> ScorerMetrics:
    """Metrics of one scorer's ``scores`` against labels ``y``."""
    card_precision, card_recall = card_precision_at_k(y, scores, days, cards, k)
    return ScorerMetrics(
        auc=float(roc_auc_score(y, scores)),
        average_precision=float(average_precision_score(y, scores)),
        precision_at_review=float(precision_score(y, scores >= review, zero_division=0)),
        recall_at_review=float(recall_score(y, scores >= review, zero_division=0)),
        precision_at_decline=float(precision_score(y, scores >= decline, zero_division=0)),
        recall_at_decline=float(recall_score(y, scores >= decline, zero_division=0)),
        card_precision_at_k=card_precision,
        card_recall_at_k=card_recall,
        brier=float(brier_score_loss(y, scores)),
    )


def card_precision_at_k(
    y: npt.NDArray[np.int8],
    scores: npt.NDArray[np.float64],
    days: npt.NDArray[np.int64],
    cards: list[str],
    k: int,
) -> tuple[float, float]:
    """Mean daily precision and recall of reviewing the ``k`` highest-scored cards a day.

    A card's daily score is its highest transaction score that day; a card is
    fraudulent on a day when one of its transactions that day is. Ties are
    broken by card id, so the result is deterministic.

    >>> y = np.array([1, 0, 0, 0], dtype=np.int8)
    >>> s = np.array([0.9, 0.8, 0.1, 0.2])
    >>> card_precision_at_k(y, s, np.zeros(4, dtype=np.int64), ["a", "b", "c", "a"], 1)
    (1.0, 1.0)
    """
    best: dict[int, dict[str, float]] = defaultdict(dict)
    fraud: dict[int, set[str]] = defaultdict(set)
    rows = zip(y.tolist(), scores.tolist(), days.tolist(), cards, strict=True)
    for label, score, day, card in rows:
        day_best = best[day]
        day_best[card] = max(score, day_best.get(card, -1.0))
        if label:
            fraud[day].add(card)
    precisions, recalls = [], []
    for day, day_best in sorted(best.items()):
        top = sorted(day_best, key=lambda c: (-day_best[c], c))[:k]
        hits = sum(c in fraud[day] for c in top)
        precisions.append(hits / k)
        if fraud[day]:
            recalls.append(hits / len(fraud[day]))
    return (
        float(np.mean(precisions)) if precisions else 0.0,
        float(np.mean(recalls)) if recalls else 0.0,
    )


def calibration(y: npt.NDArray[np.int8], scores: npt.NDArray[np.float64]) -> list[CalibrationBin]:
    """Observed fraud rate per score bin (bins without scores are left out)."""
    edges = np.asarray(CALIBRATION_EDGES)
    which = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, len(edges) - 2)
    out = []
    for i in range(len(edges) - 1):
        inside = which == i
        n = int(inside.sum())
        if n:
            out.append(
                CalibrationBin(
                    low=float(edges[i]),
                    high=float(edges[i + 1]),
                    count=n,
                    mean_score=round(float(scores[inside].mean()), 6),
                    fraud_rate=round(float(y[inside].mean()), 6),
                )
            )
    return out


def evaluate(
    y: npt.NDArray[np.int8],
    model_scores: npt.NDArray[np.float64],
    rule_scores: npt.NDArray[np.float64],
    *,
    event_times: npt.NDArray[np.int64],
    cards: list[str],
    review: float,
    decline: float,
    k: int,
) -> Evaluation:
    """The full report for one held-out split."""
    days = event_times // DAY_MS
    common = {"review": review, "decline": decline, "days": days, "cards": cards, "k": k}
    span = float(event_times.max() - event_times.min()) / DAY_MS if len(event_times) else 0.0
    return Evaluation(
        review_budget=k,
        test_rows=len(y),
        test_frauds=int(y.sum()),
        test_days=round(span, 3),
        model=scorer_metrics(y, model_scores, **common),  # type: ignore[arg-type]
        rules=scorer_metrics(y, rule_scores, **common),  # type: ignore[arg-type]
        calibration=calibration(y, model_scores),
    )


def write_report_png(
    path: Path,
    evaluation: Evaluation,
    y: npt.NDArray[np.int8],
    model_scores: npt.NDArray[np.float64],
    rule_scores: npt.NDArray[np.float64],
    *,
    title: str,
) -> None:
    """Precision-recall curves, calibration and the headline numbers, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (pr_ax, cal_ax, text_ax) = plt.subplots(1, 3, figsize=(16, 5))
    for name, scores in (("model", model_scores), ("rules", rule_scores)):
        precision, recall, _ = precision_recall_curve(y, scores)
        metrics = evaluation.model if name == "model" else evaluation.rules
        pr_ax.plot(recall, precision, label=f"{name} (AP {metrics.average_precision:.3f})")
    pr_ax.axhline(float(y.mean()), color="grey", linestyle=":", label="base rate")
    pr_ax.set(xlabel="recall", ylabel="precision", title="precision-recall (held out)")
    pr_ax.set_xlim(0, 1)
    pr_ax.set_ylim(0, 1.02)
    pr_ax.legend(loc="upper right")

    bins = evaluation.calibration
    cal_ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    cal_ax.plot(
        [b.mean_score for b in bins], [b.fraud_rate for b in bins], marker="o", label="model"
    )
    for b in bins:
        cal_ax.annotate(str(b.count), (b.mean_score, b.fraud_rate), fontsize=7)
    cal_ax.set(
        xlabel="mean score in bin",
        ylabel="observed fraud rate",
        title="calibration (points: transactions a bin)",
    )
    cal_ax.legend(loc="upper left")

    rows = [("metric", "model", "rules")]
    for field in ScorerMetrics.model_fields:
        label = field.replace("_at_k", f"_at_{evaluation.review_budget}")
        rows.append(
            (
                label,
                f"{getattr(evaluation.model, field):.4f}",
                f"{getattr(evaluation.rules, field):.4f}",
            )
        )
    text_ax.axis("off")
    table = text_ax.table(cellText=rows, loc="center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    text_ax.set_title(
        f"{evaluation.test_rows:,} held-out transactions, {evaluation.test_frauds} fraud, "
        f"{evaluation.test_days:.1f} days"
    )
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
