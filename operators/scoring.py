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

A chunk is scored in columns (:mod:`operators.score_records`): its feature
table is filled in one pass, each model runs once on its rows, decisions are
compared per column, and the Score records, drift sample and quality decisions
are built from those columns; no object is built per record but the messages.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import chain, compress
from operator import attrgetter, itemgetter, not_
from typing import Any

import numpy as np
import numpy.typing as npt

from models.onnx_scorer import OnnxModel
from models.registry import ModelRegistry, Role
from models.rules import RULES_VERSION, rules_scores
from operators.breaker import BreakerConfig, CircuitBreaker
from operators.drift import DRIFT_KEY, DriftSample
from operators.features import ALL_FEATURES, TXN_FEATURES, txn_features
from operators.internals import observe_many
from operators.messages import Featured
from operators.metrics import ServiceMetrics
from operators.quality import Decisions
from operators.score_records import (
    FeatureTable,
    ScoredBatch,
    TxnColumns,
    decision_codes,
)
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
        """Features (with transaction features) and outcome of every transaction, in order.

        Completes each record's feature dict in place, as a score record shows it.
        """
        scored = self.score_columns(batch)
        feats = [item.features for item in batch]
        for f, item in zip(feats, batch, strict=True):
            f.update(txn_features(item.env.txn))
        return feats, _outcomes(scored)

    def score_columns(self, batch: Sequence[Featured]) -> ScoredBatch:
        """The batch's transaction columns, feature table and outcomes, as columns.

        The feature dicts are read, never changed: the transaction features are
        table columns computed from the transactions' columns.
        """
        self._registry.maybe_reload()
        txns = TxnColumns.of(batch)
        feats = [item.features for item in batch]
        table = feature_table(feats, txns)
        n = len(batch)
        groups = self._registry.deciders(txns.card_id)
        scores = np.zeros(n, dtype=np.float64)
        codes = np.zeros(n, dtype=np.intp)
        version_of = np.zeros(n, dtype=np.intp)
        versions: list[tuple[str, bool]] = []
        shadow = self._shadow(batch, table)
        thresholds = self._registry.active.manifest.thresholds
        for role, (model, idx) in groups.items():
            rows = table if len(idx) == n else table[idx]
            probs = self._infer(role, model, idx, batch, rows)
            if probs is None:
                self._metrics.fallback.inc(len(idx))
                probs = np.asarray(
                    rules_scores([dict(zip(ALL_FEATURES, r, strict=True)) for r in rows.tolist()]),
                    dtype=np.float64,
                ).reshape(len(idx))
                group, decide_by = (RULES_VERSION, True), thresholds
            else:
                group, decide_by = (model.manifest.model_version, False), model.manifest.thresholds
                self._metrics.scored.labels(group[0]).inc(len(idx))
            scores[idx] = probs
            codes[idx] = decision_codes(decide_by, probs)
            version_of[idx] = len(versions)
            versions.append(group)
        return ScoredBatch(txns, feats, table, scores, codes, version_of, versions, shadow)

    @property
    def active_version(self) -> str:
        """The active model's version (what drift compares against)."""
        return self._registry.active.manifest.model_version

    def _infer(
        self,
        role: Role,
        model: OnnxModel,
        idx: list[int],
        batch: Sequence[Featured],
        table: FeatureTable,
    ) -> npt.NDArray[np.float64] | None:
        breaker = self._breakers[role]
        if not breaker.allow():
            return None
        matrix = _matrix(model.manifest.feature_names, idx, batch, table)
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
            self._metrics.batch_size.observe(len(idx))
        self._metrics.breaker_open.labels(role).set(1 if breaker.state == "open" else 0)
        # float64 as the model returned it: ``float`` of each element, in columns.
        return None if probs is None else np.asarray(probs, dtype=np.float64).reshape(len(idx))

    def _shadow(
        self, batch: Sequence[Featured], table: FeatureTable
    ) -> tuple[str, npt.NDArray[np.float64]] | None:
        model = self._registry.shadow
        if model is None or not batch:
            return None
        matrix = _matrix(model.manifest.feature_names, range(len(batch)), batch, table)
        try:
            probs = model.predict(matrix)
        except Exception as exc:
            log.warning("shadow model %s failed: %s", model.manifest.model_version, exc)
            return None
        scores = np.asarray(probs, dtype=np.float64).reshape(len(batch))
        return model.manifest.model_version, scores


def _outcomes(scored: ScoredBatch) -> list[Scored]:
    """One :class:`Scored` per row: the per-record view (the step itself builds none)."""
    shadow: list[dict[str, object] | None] = [None] * len(scored.codes)
    if scored.shadow is not None:
        version, scores = scored.shadow
        shadow = [{"model_version": version, "score": p} for p in scores.tolist()]
    versions = [scored.versions[v] for v in scored.version_of.tolist()]
    rows = zip(scored.scores.tolist(), scored.decisions(), versions, shadow, strict=True)
    return [Scored(p, d, version, fallback, sh) for p, d, (version, fallback), sh in rows]


# Upstream stages compute every feature but the transaction ones.
_UPSTREAM = tuple(n for n in ALL_FEATURES if n not in TXN_FEATURES)
_UPSTREAM_ROW = itemgetter(*_UPSTREAM)
_TXN_COLUMNS = [ALL_FEATURES.index(n) for n in TXN_FEATURES]
_UPSTREAM_COLUMNS = [ALL_FEATURES.index(n) for n in _UPSTREAM]


def feature_table(feats: Sequence[dict[str, float]], txns: TxnColumns) -> FeatureTable:
    """``[n, len(ALL_FEATURES)]`` float64 table of the feature dicts with transaction features.

    The upstream features are read in one pass (``fromiter`` over the flattened
    rows); the transaction features are columns computed from ``txns``.
    """
    n = len(feats)
    upstream = np.fromiter(
        chain.from_iterable(map(_UPSTREAM_ROW, feats)), np.float64, n * len(_UPSTREAM)
    )
    table = np.empty((n, len(ALL_FEATURES)), dtype=np.float64)
    table[:, _UPSTREAM_COLUMNS] = upstream.reshape(n, len(_UPSTREAM))
    table[:, _TXN_COLUMNS] = txns.txn_table()
    return table


@lru_cache(maxsize=64)
def _columns(names: tuple[str, ...]) -> list[int] | None:
    """Column of each named feature in a feature table; None if one is not computed here."""
    if not set(names) <= set(ALL_FEATURES):
        return None
    return [ALL_FEATURES.index(n) for n in names]


def _matrix(
    names: Sequence[str],
    idx: Sequence[int],
    batch: Sequence[Featured],
    table: FeatureTable,
) -> npt.NDArray[np.float32]:
    """``[len(idx), len(names)]`` float32 model input: columns of ``table`` (rows ``idx``).

    float64 -> float32 rounds exactly as converting each Python float directly would.
    """
    cols = _columns(tuple(names))
    if cols is None:  # a feature this service does not compute: read it, or fail as a dict does
        rows = [{**batch[i].features, **txn_features(batch[i].env.txn)} for i in idx]
        return np.array([[f[n] for n in names] for f in rows], dtype=np.float32)
    return table[:, cols].astype(np.float32)


def drift_sample(scored: ScoredBatch, active: str) -> DriftSample | None:
    """The rows the active model decided, for drift against its reference; None if none."""
    rows = scored.rows_of(active)
    if not len(rows):
        return None
    n = len(scored.codes)
    return DriftSample(
        model_version=active,
        names=ALL_FEATURES,
        values=scored.table if len(rows) == n else scored.table[rows],
        scores=scored.scores if len(rows) == n else scored.scores[rows],
        event_times=np.asarray(scored.txns.event_time, dtype=np.int64)[rows],
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
    - ``(shard, Decisions)``: for that merchant shard's quality state, which
      the decisions stay grouped by.
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
        # Quality's columns over the whole step: (event_id, event_time, decision), late.
        decided: list[tuple[str, int, str]] = []
        late: list[bool] = []
        for lo in range(0, len(batch), MAX_MODEL_BATCH):
            scored = scorer.score_columns(batch[lo : lo + MAX_MODEL_BATCH])
            txns = scored.txns
            now = self._clock()
            step.append((items[0][0], scored.messages(self._topic, format_ms(now))))
            sent = np.fromiter(map(_TIMESTAMP, txns.raw), np.int64, len(txns.raw))
            observe_many(metrics.e2e_latency, (np.maximum(0, now - sent) / 1000).tolist())
            sample = drift_sample(scored, scorer.active_version)
            if sample is not None:
                step.append((DRIFT_KEY, sample))
            decided.extend(zip(txns.event_id, txns.event_time, scored.decisions(), strict=True))
            late.extend(txns.late)
        late_count = sum(late)
        if late_count:
            metrics.late.inc(late_count)
        first = 0
        for shard, featured in items:
            end = first + len(featured)
            mine = list(compress(decided[first:end], map(not_, late[first:end])))
            first = end
            if mine:
                step.append((shard, Decisions(shard, mine)))
        return step


_TIMESTAMP = attrgetter("timestamp_ms")
