"""``build_flow``: the one place that wires the stages, in pipeline order.

transactions, chargebacks (Kafka)
  -> decode + per-partition watermarks (bad records -> dead letters)
  -> card shards: duplicates, sliding windows, sessions (RocksDB)
  -> merchant shards: tumbling windows, chargebacks (RocksDB) -> window-aggregates
  -> score (ONNX, batched) -> scores
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from prometheus_client import CollectorRegistry

from models.onnx_scorer import OnnxModel
from operators.card_features import CardConfig
from operators.decode import DecodeConfig, Kind, PartitionDecoder
from operators.kafka_io import (
    KafkaBatchSink,
    KafkaBatchSource,
    ProducerPool,
    SinkConfig,
    SourceConfig,
)
from operators.merchant_windows import MerchantConfig
from operators.messages import OutMessage
from operators.metrics import ServiceMetrics
from operators.scoring import ScoringConfig, score
from operators.watermarks import TimeConfig
from operators.windows import SCORE, WindowsConfig, windows
from schemas.settings import Settings
from state.store import StateStore


def wall_clock_ms() -> int:
    """Milliseconds since the epoch, from the system clock."""
    return time.time_ns() // 1_000_000


def build_flow(
    settings: Settings,
    *,
    model: OnnxModel,
    registry: CollectorRegistry,
    store: Callable[[], StateStore],
    clock: Callable[[], int] = wall_clock_ms,
    stop_at_eof: bool = False,
    stop: threading.Event | None = None,
) -> Dataflow:
    """The StreamScore dataflow for ``settings``; nothing runs until bytewax executes it.

    ``store`` returns the process's state store (opened once, shared by its
    workers). Setting ``stop`` ends the input: the flow finishes its epoch and
    returns.
    """
    metrics = ServiceMetrics.create(registry)
    topics = settings.topics
    kinds: dict[str, Kind] = {topics.transactions: "transaction", topics.chargebacks: "chargeback"}
    time_config = TimeConfig(
        out_of_orderness_ms=settings.out_of_orderness_ms,
        allowed_lateness_ms=settings.allowed_lateness_ms,
        max_future_ms=settings.max_future_ms,
        idle_timeout_ms=settings.idle_timeout_ms,
    )
    decode_config = DecodeConfig(
        dead_letter_topic=topics.dead_letters,
        max_message_bytes=settings.max_message_bytes,
        time=time_config,
    )

    def decoder(source: str, topic: str, resume: int | None) -> PartitionDecoder:
        return PartitionDecoder(
            decode_config,
            source=source,
            kind=kinds[topic],
            resume=resume,
            now_ms=clock,
            on_dead=lambda reason: metrics.dead_letters.labels(reason).inc(),
        )

    source = KafkaBatchSource(
        SourceConfig(
            brokers=settings.brokers,
            topics=list(kinds),
            batch_size=settings.source_batch_size,
            stop_at_eof=stop_at_eof,
            idle_timeout_ms=settings.idle_timeout_ms,
            extra=settings.consumer_config,
            stop=stop or threading.Event(),
        ),
        decoder,
    )
    parts = source.list_parts()
    batches = op.input("in", flow := Dataflow("streamscore"), source)

    def count_in(batch: Any) -> None:
        n = len(batch.txns) + len(batch.chargebacks) + len(batch.dead)
        if n:
            metrics.events_in.labels(batch.source.rpartition("#")[0]).inc(n)

    batches = op.inspect("count-in", batches, lambda _step, b: count_in(b))
    routed = windows(
        "windows",
        batches,
        config=WindowsConfig(
            shards=settings.shards,
            txn_sources=tuple(p for p in parts if p.rpartition("#")[0] == topics.transactions),
            cb_sources=tuple(p for p in parts if p.rpartition("#")[0] == topics.chargebacks),
            card=CardConfig(time=time_config, session_gap_ms=settings.session_gap_ms),
            merchant=MerchantConfig(time=time_config, aggregates_topic=topics.window_aggregates),
            dead_letter_topic=topics.dead_letters,
        ),
        store=store,
    )
    to_score = op.filter_map_value("to-score", routed, lambda kv: kv[1] if kv[0] == SCORE else None)
    scores = score(
        "score",
        to_score,
        config=ScoringConfig(scores_topic=topics.scores),
        model=model,
        clock=clock,
        metrics=metrics,
    )
    others: Stream[tuple[str, list[OutMessage]]] = op.filter_map_value(
        "others", routed, lambda kv: kv[1] if kv[0] != SCORE else None
    )
    out = op.merge("outputs", scores, others)
    sink_config = SinkConfig(
        brokers=settings.brokers, parts=settings.shards, extra=settings.producer_config
    )
    op.output("kafka-out", out, KafkaBatchSink(sink_config, ProducerPool(sink_config)))
    return flow
