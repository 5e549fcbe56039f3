"""Score batches of transactions; one Score record per transaction.

Time rules: none of its own; ``processed_at`` and the end-to-end latency come
from the injected wall clock, the breaker's cool-down and the registry's
reload interval from the injected monotonic clock. State: none in the dataflow
(the registry and the breakers live per process).

A batch is what every merchant shard of the worker emitted in one step (cut
into chunks of at most ``MAX_MODEL_BATCH`` rows): it goes through ONNX in one
call per model role, so an event waits for no timer, only for the records
polled with it; each transaction still gets its own score and decision.
Cards in the canary share are decided by the canary model; a shadow model's
score goes into ``shadow`` and never changes the decision. When a model
fails, or its breaker is open after repeated failures or slow calls, the
rules fallback scores instead (``fallback: true``, ``model_version`` the
rules version).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from models.onnx_scorer import OnnxModel
from models.registry import ModelRegistry, Role
from models.rules import RULES_VERSION, rules_scores
from operators.breaker import BreakerConfig, CircuitBreaker
from operators.drift import DRIFT_KEY, DriftSample
from operators.features import ALL_FEATURES, txn_features
from operators.internals import observe_many
from operators.messages import Featured, OutMessage
from operators.metrics import ServiceMetrics
from operators.quality import DECISIONS
from schemas.timefmt import format_ms

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ScoringConfig:
    """Where scores go and the inference time budget."""

    scores_topic: str
    breaker: BreakerConfig = field(default_factory=BreakerConfig)


# Read-only all the same: a frozen dataclass sets each field through
# ``object.__setattr__``, and one is built per event.
@dataclass(slots=True)
class Scored:
    """One transaction's outcome before serialisation."""

    score: float
    decision: str
    model_version: str
    fallback: bool
    shadow: dict[str, object] | None


class Scorer:
    """Scores batches with the registry's models, the breakers and the rules fallback."""

    def __init__(
        self,
        config: ScoringConfig,
        registry: ModelRegistry,
        *,
        monotonic: Callable[[], float],
        metrics: ServiceMetrics,
    ) -> None:
        self._registry = registry
        self._metrics = metrics
        self._breakers = {
            role: CircuitBreaker(config.breaker, monotonic) for role in ("active", "canary")
        }

    def score(self, batch: Sequence[Featured]) -> tuple[list[dict[str, float]], list[Scored]]:
        """Features (with transaction features) and outcome of every transaction, in order."""
        feats, _table, outcomes = self.score_table(batch)
        return feats, outcomes

    def score_table(
        self, batch: Sequence[Featured]
    ) -> tuple[list[dict[str, float]], FeatureTable, list[Scored]]:
        """Like :meth:`score`, with the batch's ``[n, len(ALL_FEATURES)]`` float64 table.

        Every model input and the drift sample are columns of that one table, so
        the Python floats are turned into an array once per batch.
        """
        self._registry.maybe_reload()
        # Each record's dict was built for it alone upstream: complete it in place.
        feats = [item.features for item in batch]
        for f, item in zip(feats, batch, strict=True):
            f.update(txn_features(item.env.txn))
        table = feature_table(feats)
        groups = self._registry.deciders([item.env.txn.card_id for item in batch])
        results: list[Scored | None] = [None] * len(batch)
        shadow = self._shadow(feats, table)
        thresholds = self._registry.active.manifest.thresholds
        for role, (model, idx) in groups.items():
            rows = [feats[i] for i in idx]
            probs = self._infer(role, model, rows, table if len(idx) == len(batch) else table[idx])
            if probs is None:
                self._metrics.fallback.inc(len(idx))
                fallback = rules_scores(rows)
                for i, p in zip(idx, fallback, strict=True):
                    results[i] = Scored(p, thresholds.decide(p), RULES_VERSION, True, shadow[i])
                continue
            version = model.manifest.model_version
            decide = model.manifest.thresholds.decide
            for i, p in zip(idx, probs, strict=True):
                results[i] = Scored(p, decide(p), version, False, shadow[i])
            self._metrics.scored.labels(version).inc(len(idx))
        return feats, table, [r for r in results if r is not None]

    @property
    def active_version(self) -> str:
        """The active model's version (what drift compares against)."""
        return self._registry.active.manifest.model_version

    def _infer(
        self, role: Role, model: OnnxModel, rows: list[dict[str, float]], table: FeatureTable
    ) -> list[float] | None:
        breaker = self._breakers[role]
        if not breaker.allow():
            return None
        matrix = _matrix(model.manifest.feature_names, rows, table)
        started = time.perf_counter()
        try:
            probs = model.predict(matrix)
        except Exception as exc:  # onnxruntime raises several private types
            breaker.record_failure()
            log.warning("%s model %s failed: %s", role, model.manifest.model_version, exc)
            probs = None
        else:
            elapsed = time.perf_counter() - started
            breaker.record_success(elapsed)
            self._metrics.inference_latency.observe(elapsed)
            self._metrics.batch_size.observe(len(rows))
        self._metrics.breaker_open.labels(role).set(1 if breaker.state == "open" else 0)
        return None if probs is None else [float(p) for p in probs.tolist()]

    def _shadow(
        self, feats: list[dict[str, float]], table: FeatureTable
    ) -> list[dict[str, object] | None]:
        model = self._registry.shadow
        if model is None or not feats:
            return [None] * len(feats)
        matrix = _matrix(model.manifest.feature_names, feats, table)
        try:
            probs = model.predict(matrix).tolist()
        except Exception as exc:
            log.warning("shadow model %s failed: %s", model.manifest.model_version, exc)
            return [None] * len(feats)
        version = model.manifest.model_version
        return [{"model_version": version, "score": float(p)} for p in probs]


FeatureTable = npt.NDArray[np.float64]
_ALL_ROW = itemgetter(*ALL_FEATURES)


def feature_table(feats: Sequence[dict[str, float]]) -> FeatureTable:
    """``[len(feats), len(ALL_FEATURES)]`` float64 table of feature dicts, in that order."""
    return np.array([_ALL_ROW(f) for f in feats], dtype=np.float64).reshape(
        len(feats), len(ALL_FEATURES)
    )


@lru_cache(maxsize=64)
def _columns(names: tuple[str, ...]) -> list[int] | None:
    """Column of each named feature in a feature table; None if one is not computed here."""
    if not set(names) <= set(ALL_FEATURES):
        return None
    return [ALL_FEATURES.index(n) for n in names]


def _matrix(
    names: Sequence[str], rows: Sequence[dict[str, float]], table: FeatureTable
) -> npt.NDArray[np.float32]:
    """``[len(rows), len(names)]`` float32 model input: columns of ``table``, the rows' table.

    float64 -> float32 rounds exactly as converting each Python float directly would.
    """
    cols = _columns(tuple(names))
    if cols is None:  # a feature this service does not compute: fail as a dict lookup does
        return np.array([[f[n] for n in names] for f in rows], dtype=np.float32)
    return table[:, cols].astype(np.float32)


def drift_sample(
    batch: Sequence[Featured],
    feats: Sequence[dict[str, float]],
    outcomes: Sequence[Scored],
    active: str,
    table: FeatureTable | None = None,
) -> DriftSample | None:
    """The rows the active model decided, for drift against its reference; None if none."""
    rows = [i for i, o in enumerate(outcomes) if o.model_version == active]
    if not rows:
        return None
    if table is None:
        table = feature_table(feats)
    return DriftSample(
        model_version=active,
        names=ALL_FEATURES,
        values=table if len(rows) == len(outcomes) else table[rows],
        scores=np.array([outcomes[i].score for i in rows], dtype=np.float64),
        event_times=np.array([batch[i].env.txn.event_time for i in rows], dtype=np.int64),
    )


# Rows per model call: one step can hold every source batch of the worker, and a
# call must stay well inside the inference budget its breaker enforces.
MAX_MODEL_BATCH = 2048


class ScoreStep:
    """One worker step of scoring: per-shard batches of featured transactions in.

    Everything the merchant shards handed over in one worker step is scored
    together: one model call (of at most ``MAX_MODEL_BATCH`` rows) and one
    drift sample per chunk rather than per shard (at moderate load each shard
    emits only a few records a step). It returns keyed items for three
    consumers, told apart by their value's type so the flow splits them with
    no re-tagging step:

    - ``(shard, [OutMessage])``: Score messages (the key only spreads output);
    - ``(DRIFT_KEY, DriftSample)``: for the drift monitor;
    - ``(shard, (DECISIONS, shard, decided))``: for that merchant shard's
      quality state, which the decisions stay grouped by.
    """

    def __init__(
        self,
        config: ScoringConfig,
        scorer: Scorer,
        *,
        clock: Callable[[], int],
        metrics: ServiceMetrics,
    ) -> None:
        self._topic = config.scores_topic
        self._scorer = scorer
        self._clock = clock
        self._metrics = metrics

    def __call__(self, items: Sequence[tuple[str, list[Featured]]]) -> list[tuple[str, Any]]:
        """The step's outputs for ``items``, each shard's ``(shard, featured)``."""
        scorer, metrics = self._scorer, self._metrics
        batch = [item for _shard, featured in items for item in featured]
        if not batch:
            return []
        step: list[tuple[str, Any]] = []
        outcomes: list[Scored] = []
        for lo in range(0, len(batch), MAX_MODEL_BATCH):
            chunk = batch[lo : lo + MAX_MODEL_BATCH]
            feats, table, scored = scorer.score_table(chunk)
            now = self._clock()
            step.append((items[0][0], self._messages(chunk, feats, scored, now)))
            observe_many(
                metrics.e2e_latency,
                [max(0, now - item.env.raw.timestamp_ms) / 1000 for item in chunk],
            )
            sample = drift_sample(chunk, feats, scored, scorer.active_version, table)
            if sample is not None:
                step.append((DRIFT_KEY, sample))
            outcomes.extend(scored)
        late = sum(item.env.late for item in batch)
        if late:
            metrics.late.inc(late)
        first = 0
        for shard, featured in items:
            decided = [
                (item.env.txn.event_id, item.env.txn.event_time, s.decision)
                for item, s in zip(featured, outcomes[first : first + len(featured)], strict=True)
                if not item.env.late
            ]
            first += len(featured)
            if decided:
                step.append((shard, (DECISIONS, shard, decided)))
        return step

    def _messages(
        self,
        batch: list[Featured],
        feats: list[dict[str, float]],
        outcomes: list[Scored],
        now: int,
    ) -> list[OutMessage]:
        topic = self._topic
        processed_at = format_ms(now)
        out = []
        for item, f, s in zip(batch, feats, outcomes, strict=True):
            txn = item.env.txn
            body = {
                "event_id": txn.event_id,
                "card_id": txn.card_id,
                "merchant_id": txn.merchant_id,
                "event_time": format_ms(txn.event_time),
                "score": s.score,
                "decision": s.decision,
                "model_version": s.model_version,
                "fallback": s.fallback,
                "late": item.env.late,
                "features": f,
                "shadow": s.shadow,
                "processed_at": processed_at,
            }
            raw = item.env.raw
            out.append(
                OutMessage(topic, txn.card_id.encode(), orjson.dumps(body), raw.source, raw.offset)
            )
        return out
