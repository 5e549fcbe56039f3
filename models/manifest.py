"""The model manifest: what a model artifact directory promises about its ONNX file.

A model lives in a directory holding ``model.onnx`` and ``manifest.json``. The
manifest names the model and version, lists the feature names in the model's
input order, the decision thresholds, the sha256 of the ONNX file, training
metrics and the reference distributions that drift statistics compare with.
"""

from __future__ import annotations

import math
from itertools import pairwise
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.errors import ModelError

MANIFEST_FILE = "manifest.json"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Thresholds(_Frozen):
    """Score cut-offs: ``review`` <= score < ``decline`` reviews, ``decline`` and up declines."""

    review: Annotated[float, Field(ge=0, le=1)]
    decline: Annotated[float, Field(ge=0, le=1)]

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.review > self.decline:
            raise ValueError("review threshold must not exceed decline threshold")
        return self

    def decide(self, score: float) -> str:
        """Decision for one score.

        >>> Thresholds(review=0.3, decline=0.7).decide(0.5)
        'review'
        """
        if score >= self.decline:
            return "decline"
        if score >= self.review:
            return "review"
        return "approve"


class Distribution(_Frozen):
    """A reference distribution: quantile bin edges, the share in each bin, and the mean."""

    edges: list[float]
    proportions: list[float]
    mean: float

    @model_validator(mode="after")
    def _shape(self) -> Distribution:
        if len(self.proportions) != len(self.edges) + 1:
            raise ValueError("proportions need one more entry than edges")
        # Drift finds a value's bin by binary search over the edges (and counts bins
        # edge by edge), which only means something over finite, increasing edges.
        edges = self.edges
        if not all(map(math.isfinite, edges)):
            raise ValueError("edges must be finite numbers")
        if any(b <= a for a, b in pairwise(edges)):
            raise ValueError("edges must be strictly increasing")
        return self


class Reference(_Frozen):
    """Training-time distributions of each feature and of the score."""

    features: dict[str, Distribution]
    score: Distribution


class ScorerMetrics(_Frozen):
    """One scorer's held-out metrics."""

    auc: float
    average_precision: float
    precision_at_review: float
    recall_at_review: float
    precision_at_decline: float
    recall_at_decline: float
    card_precision_at_k: float
    card_recall_at_k: float
    brier: float


class CalibrationBin(_Frozen):
    """Scores in ``[low, high)``: how many, their mean, and the observed fraud rate."""

    low: float
    high: float
    count: int
    mean_score: float
    fraud_rate: float


class Evaluation(_Frozen):
    """The held-out report a manifest carries."""

    review_budget: Annotated[int, Field(ge=1)]  # k, cards reviewed a day
    test_rows: int
    test_frauds: int
    test_days: float
    model: ScorerMetrics
    rules: ScorerMetrics
    calibration: list[CalibrationBin]


class Manifest(_Frozen):
    """Everything the service needs to trust and use one ONNX model."""

    name: str
    version: Annotated[int, Field(ge=1)]
    onnx_file: str = "model.onnx"
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    feature_names: Annotated[list[str], Field(min_length=1)]
    thresholds: Thresholds
    metrics: dict[str, float]
    reference: Reference
    training: dict[str, float | int | str]
    # The held-out report (models.evaluation); absent in manifests written before it.
    evaluation: Evaluation | None = None

    @property
    def model_version(self) -> str:
        """The ``model_version`` written on every score, e.g. ``fraud-gbt-1``."""
        return f"{self.name}-{self.version}"


def read_manifest(model_dir: Path) -> Manifest:
    """Read and validate ``manifest.json`` of a model directory, or raise ModelError."""
    path = model_dir / MANIFEST_FILE
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise ModelError(f"cannot read model manifest {path}: {exc.strerror}") from None
    except ValidationError as exc:
        raise ModelError(f"invalid model manifest {path}: {exc.errors()[0]['msg']}") from None
