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
block's transaction columns are filled from its transactions' columns, each
model runs once on its rows, decisions are
compared per column, and the Score records, drift sample and quality decisions
are built from those columns; no object is built per record but the messages.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from operator import attrgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from models.onnx_scorer import OnnxModel
from models.registry import ModelRegistry, Role
from models.rules import RULES_VERSION, rules_scores
from operators.breaker import BreakerConfig, CircuitBreaker
from operators.columns import BLOCK_COLUMNS, TXN_COLUMN
from operators.drift import DRIFT_KEY, DriftSample
from operators.internals import observe_many
from operators.json_fill import compile_kernel
from operators.messages import FeatureBlock
from operators.metrics import ServiceMetrics
from operators.quality import Decisions
from operators.score_records import FeatureTable, ScoredBatch, decision_codes, txn_table
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

    def score(self, block: FeatureBlock) -> tuple[list[dict[str, float]], list[Scored]]:
        """Features and outcome of every transaction, in order: the per-record view.

        Each row's features are a dict in the order a score record lists them.
        """
        scored = self.score_columns(block)
        feats = [dict(zip(BLOCK_COLUMNS, row, strict=True)) for row in scored.table.tolist()]
        return feats, _outcomes(scored)

    def score_columns(self, block: FeatureBlock) -> ScoredBatch:
        """The block's transaction columns, features and outcomes, as columns.

        Fills the block's transaction columns (from the transactions' columns)
        in place; the block's feature matrix is the batch's feature table.
        """
        self._registry.maybe_reload()
        txns = block.txns
        table = block.features
        table[:, TXN_COLUMN:] = txn_table(txns)
        n = len(block)
        groups = self._registry.deciders(txns.card_id)
        scores = np.zeros(n, dtype=np.float64)
        codes = np.zeros(n, dtype=np.intp)
        version_of = np.zeros(n, dtype=np.intp)
        versions: list[tuple[str, bool]] = []
        shadow = self._shadow(table)
        thresholds = self._registry.active.manifest.thresholds
        for role, (model, idx) in groups.items():
            rows = table if len(idx) == n else table[idx]
            probs = self._infer(role, model, idx, rows)
            if probs is None:
                self._metrics.fallback.inc(len(idx))
                probs = np.asarray(
                    rules_scores([dict(zip(BLOCK_COLUMNS, r, strict=True)) for r in rows.tolist()]),
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
        return ScoredBatch(txns, table, scores, codes, version_of, versions, shadow)

    @property
    def active_version(self) -> str:
        """The active model's version (what drift compares against)."""
        return self._registry.active.manifest.model_version

    def _infer(
        self,
        role: Role,
        model: OnnxModel,
        idx: list[int],
        table: FeatureTable,
    ) -> npt.NDArray[np.float64] | None:
        breaker = self._breakers[role]
        if not breaker.allow():
            return None
        matrix = _matrix(model.manifest.feature_names, table)
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

    def _shadow(self, table: FeatureTable) -> tuple[str, npt.NDArray[np.float64]] | None:
        model = self._registry.shadow
        if model is None or not len(table):
            return None
        matrix = _matrix(model.manifest.feature_names, table)
        try:
            probs = model.predict(matrix)
        except Exception as exc:
            log.warning("shadow model %s failed: %s", model.manifest.model_version, exc)
            return None
        scores = np.asarray(probs, dtype=np.float64).reshape(len(table))
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


@lru_cache(maxsize=64)
def _columns(names: tuple[str, ...]) -> list[int]:
    """Column of each named feature in a feature block; KeyError for one not computed here."""
    missing = [n for n in names if n not in BLOCK_COLUMNS]
    if missing:
        raise KeyError(missing[0])
    return [BLOCK_COLUMNS.index(n) for n in names]


def _matrix(names: Sequence[str], table: FeatureTable) -> npt.NDArray[np.float32]:
    """``[len(table), len(names)]`` float32 model input: the named columns of ``table``.

    float64 -> float32 rounds exactly as converting each Python float directly would.
    """
    return table[:, _columns(tuple(names))].astype(np.float32)


def drift_sample(scored: ScoredBatch, active: str) -> DriftSample | None:
    """The rows the active model decided, for drift against its reference; None if none."""
    rows = scored.rows_of(active)
    if not len(rows):
        return None
    n = len(scored.codes)
    return DriftSample(
        model_version=active,
        names=BLOCK_COLUMNS,
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
        # The record kernel compiles (or loads from numba's cache) now, before any input.
        compile_kernel()
        self._topic = config.scores_topic
        self._scorer = scorer
        self._clock = clock
        self._metrics = metrics

    def __call__(self, items: Sequence[tuple[str, FeatureBlock]]) -> list[tuple[str, Any]]:
        """The step's outputs for ``items``, each shard's ``(shard, block)``."""
        scorer, metrics = self._scorer, self._metrics
        if not items:
            return []
        batch = FeatureBlock.concat([block for _shard, block in items])
        if not len(batch):
            return []
        step: list[tuple[str, Any]] = []
        # Quality's columns over the whole step: event id, event time, decision code, late.
        ids: list[str] = []
        times: list[int] = []
        codes: list[npt.NDArray[np.intp]] = []
        late: list[bool] = []
        for lo in range(0, len(batch), MAX_MODEL_BATCH):
            scored = scorer.score_columns(batch.rows(lo, lo + MAX_MODEL_BATCH))
            txns = scored.txns
            now = self._clock()
            step.append((items[0][0], scored.messages(self._topic, format_ms(now))))
            sent = np.fromiter(map(_TIMESTAMP, txns.raw), np.int64, len(txns.raw))
            observe_many(metrics.e2e_latency, np.maximum(0, now - sent) / 1000)
            sample = drift_sample(scored, scorer.active_version)
            if sample is not None:
                step.append((DRIFT_KEY, sample))
            ids.extend(txns.event_id)
            times.extend(txns.event_time)
            codes.append(scored.codes)
            late.extend(txns.late)
        late_count = sum(late)
        if late_count:
            metrics.late.inc(late_count)
        all_times = np.array(times, dtype=np.int64)
        all_codes = np.concatenate(codes)
        first = 0
        for shard, block in items:
            end = first + len(block)
            if late_count and any(late[first:end]):  # quality takes non-late rows only
                rows = np.flatnonzero(~np.array(late[first:end], dtype=bool)) + first
                mine = [ids[i] for i in rows.tolist()]
                mine_times, mine_codes = all_times[rows], all_codes[rows]
            else:
                mine = ids[first:end]
                mine_times, mine_codes = all_times[first:end], all_codes[first:end]
            first = end
            if mine:
                step.append((shard, Decisions(shard, mine, mine_times, mine_codes)))
        return step


_TIMESTAMP = attrgetter("timestamp_ms")
