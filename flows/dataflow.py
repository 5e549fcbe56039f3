"""``build_flow``: the one place that wires the stages, in pipeline order.

transactions (Kafka) -> decode (bad -> dead letters) -> key by card
    -> score (ONNX) -> scores / dead-letters (Kafka)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from prometheus_client import CollectorRegistry

from models.onnx_scorer import OnnxModel
from operators.decode import DecodeConfig, Decoded, decode_batch
from operators.kafka_io import (
    KafkaBatchSink,
    KafkaBatchSource,
    ProducerPool,
    SinkConfig,
    SourceConfig,
)
from operators.keying import ShardConfig, key_by_card
from operators.messages import OutMessage, RawRecord
from operators.metrics import ServiceMetrics
from operators.scoring import ScoringConfig, score
from schemas.settings import Settings


def wall_clock_ms() -> int:
    """Milliseconds since the epoch, from the system clock."""
    return time.time_ns() // 1_000_000


def build_flow(
    settings: Settings,
    *,
    model: OnnxModel,
    registry: CollectorRegistry,
    clock: Callable[[], int] = wall_clock_ms,
    stop_at_eof: bool = False,
    stop: threading.Event | None = None,
) -> Dataflow:
    """The StreamScore dataflow for ``settings``; nothing runs until bytewax executes it.

    Setting ``stop`` ends the input: the flow finishes its epoch and returns.
    """
    metrics = ServiceMetrics.create(registry)
    topics = settings.topics
    flow = Dataflow("streamscore")

    source = KafkaBatchSource(
        SourceConfig(
            brokers=settings.brokers,
            topics=[topics.transactions],
            batch_size=settings.source_batch_size,
            stop_at_eof=stop_at_eof,
            extra=settings.consumer_config,
            stop=stop or threading.Event(),
        )
    )
    raw = op.input("transactions-in", flow, source)

    decode_config = DecodeConfig(
        dead_letter_topic=topics.dead_letters, max_message_bytes=settings.max_message_bytes
    )

    def decode(batch: list[RawRecord]) -> Decoded:
        metrics.events_in.labels(topics.transactions).inc(len(batch))
        decoded = decode_batch(decode_config, batch, clock)
        for reason in decoded.reasons:
            metrics.dead_letters.labels(reason).inc()
        return decoded

    decoded = op.map("decode", raw, decode)
    valid = op.filter_map("valid", decoded, lambda d: d.valid or None)
    dead = op.filter_map("dead", decoded, lambda d: ("dead-letters", d.dead) if d.dead else None)

    by_card = key_by_card("key-by-card", valid, ShardConfig(shards=settings.shards))
    scores = score(
        "score",
        by_card,
        config=ScoringConfig(scores_topic=topics.scores),
        model=model,
        clock=clock,
        metrics=metrics,
    )

    out: Stream[tuple[str, list[OutMessage]]] = op.merge("outputs", scores, dead)
    sink_config = SinkConfig(
        brokers=settings.brokers, parts=settings.shards, extra=settings.producer_config
    )
    op.output("kafka-out", out, KafkaBatchSink(sink_config, ProducerPool(sink_config)))
    return flow
