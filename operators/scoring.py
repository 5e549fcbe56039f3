"""Score batches of transactions with the ONNX model; one Score record per transaction.

Time rules: none of its own; ``processed_at`` and the end-to-end latency come
from the injected clock. State: none (the model is loaded once per process by
the entry point and passed in). A whole shard batch goes through ONNX in one
call, while each transaction still gets its own score and decision.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import bytewax.operators as op
import numpy as np
from bytewax.dataflow import Stream

from models.onnx_scorer import OnnxModel
from operators.features import txn_features
from operators.messages import Featured, OutMessage
from operators.metrics import ServiceMetrics
from schemas.timefmt import format_ms


@dataclass(frozen=True, kw_only=True)
class ScoringConfig:
    """Where scores go."""

    scores_topic: str


class _Scorer:
    def __init__(
        self,
        config: ScoringConfig,
        model: OnnxModel,
        clock: Callable[[], int],
        metrics: ServiceMetrics,
    ) -> None:
        self._topic = config.scores_topic
        self._model = model
        self._names = model.manifest.feature_names
        self._version = model.manifest.model_version
        self._decide = model.manifest.thresholds.decide
        self._clock = clock
        self._metrics = metrics

    def __call__(self, batch: list[Featured]) -> list[OutMessage]:
        feats = [{**item.features, **txn_features(item.env.txn)} for item in batch]
        matrix = np.array([[f[n] for n in self._names] for f in feats], dtype=np.float32)
        started = time.perf_counter()
        probs = self._model.predict(matrix)
        self._metrics.inference_latency.observe(time.perf_counter() - started)
        self._metrics.batch_size.observe(len(batch))
        now = self._clock()
        processed_at = format_ms(now)
        out = []
        for item, f, p in zip(batch, feats, probs.tolist(), strict=True):
            env = item.env
            txn = env.txn
            body = {
                "event_id": txn.event_id,
                "card_id": txn.card_id,
                "merchant_id": txn.merchant_id,
                "event_time": format_ms(txn.event_time),
                "score": p,
                "decision": self._decide(p),
                "model_version": self._version,
                "fallback": False,
                "late": env.late,
                "features": f,
                "shadow": None,
                "processed_at": processed_at,
            }
            out.append(OutMessage(self._topic, txn.card_id.encode(), json.dumps(body).encode()))
            self._metrics.e2e_latency.observe(max(0, now - env.raw.timestamp_ms) / 1000)
        self._metrics.scored.labels(self._version).inc(len(batch))
        return out


def score(
    step_id: str,
    up: Stream[tuple[str, list[Featured]]],
    *,
    config: ScoringConfig,
    model: OnnxModel,
    clock: Callable[[], int],
    metrics: ServiceMetrics,
) -> Stream[tuple[str, list[OutMessage]]]:
    """Per-shard batches of transactions -> per-shard batches of Score messages."""
    scorer = _Scorer(config, model, clock, metrics)
    return op.map_value(step_id, up, scorer)
