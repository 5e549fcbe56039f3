"""``build_flow``: the one place that wires the stages, in pipeline order.

transactions, chargebacks (Kafka)
  -> decode + per-partition watermarks (bad records -> dead-letters)
  -> card shards: duplicates (-> dead-letters), sliding windows, sessions (RocksDB)
  -> merchant shards: tumbling windows, chargebacks (RocksDB) -> window-aggregates
     (chargebacks for closed windows -> dead-letters)
  -> score (ONNX, batched) -> scores
  -> drift (one monitor for the flow) -> drift
  -> quality (decisions joined with chargebacks per merchant shard, summed) -> quality
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import FixedPartitionedSource
from bytewax.outputs import Sink

from flows.health import PolledSource
from models.registry import ModelRegistry
from operators.breaker import BreakerConfig
from operators.card_features import CardConfig
from operators.decode import DeadLetters, DecodeConfig, Kind, PartitionDecoder, dead_letter_limit
from operators.drift import DriftConfig, DriftSample, DriftStat, drift
from operators.exactly_once import ExactlyOnceConfig, SourceProgress, TransactionalWriter
from operators.kafka_io import (
    PRODUCER_SETTINGS,
    DecoderFactory,
    KafkaBatchSink,
    KafkaBatchSource,
    ProducerPool,
    SinkConfig,
    SourceConfig,
    log_client_error,
)
from operators.merchant_windows import MerchantConfig
from operators.messages import OutMessage, ToScore
from operators.metrics import ServiceMetrics
from operators.quality import (
    QUALITY_INPUTS,
    QualityConfig,
    QualityInput,
    QualityRecord,
    quality,
)
from operators.quarantine import quarantined
from operators.scoring import Scorer, ScoreStep, ScoringConfig
from operators.watermarks import TimeConfig, WatermarkState
from operators.windows import MerchantOutput, WindowsConfig, windows
from schemas.errors import ConfigError
from schemas.settings import Settings
from state.store import StateStore


def wall_clock_ms() -> int:
    """Milliseconds since the epoch, from the system clock."""
    return time.time_ns() // 1_000_000


def event_time_config(settings: Settings) -> TimeConfig:
    """The event-time bounds of ``settings``, for the flow and for training replays alike."""
    return TimeConfig(
        out_of_orderness_ms=settings.out_of_orderness_ms,
        allowed_lateness_ms=settings.allowed_lateness_ms,
        max_future_ms=settings.max_future_ms,
        idle_timeout_ms=settings.idle_timeout_ms,
        watermark_agreement=settings.watermark_agreement,
    )


def build_flow(
    settings: Settings,
    *,
    models: ModelRegistry,
    metrics: ServiceMetrics,
    store: Callable[[], StateStore],
    clock: Callable[[], int] = wall_clock_ms,
    monotonic: Callable[[], float] = time.monotonic,
    stop_at_eof: bool = False,
    stop: threading.Event | None = None,
    process_id: int = 0,
    workers: int = 1,
    make_source: Callable[[DecoderFactory], FixedPartitionedSource[Any, Any]] | None = None,
    sink: Sink[Any] | None = None,
    on_poll: Callable[[], None] | None = None,
) -> Dataflow:
    """The StreamScore dataflow for ``settings``; nothing runs until bytewax executes it.

    ``store`` returns the process's state store (opened once, shared by its
    workers); ``models`` holds the serving models; ``process_id`` is this
    process's index in the cluster (its output is produced locally) and ``workers``
    the cluster's bytewax workers, over which the shards are spread evenly. Setting
    ``stop`` ends the input: the flow finishes its epoch and returns. ``make_source``
    (given the per-partition decoder factory) and ``sink`` replace the Kafka source
    and sink, for runs in this process over an in-memory log (:mod:`flows.testing`).
    """
    exactly_once = settings.delivery == "exactly-once"
    if exactly_once and settings.recovery_dir is None:
        raise ConfigError(
            "STREAMSCORE_DELIVERY (--delivery)",
            "exactly-once needs crash recovery: set STREAMSCORE_RECOVERY_DIR (--recovery-dir)",
        )
    # Exactly-once: the sources record their epoch-end offsets for the sink's transaction.
    progress = SourceProgress() if exactly_once else None
    topics = settings.topics
    kinds: dict[str, Kind] = {topics.transactions: "transaction", topics.chargebacks: "chargeback"}
    time_config = event_time_config(settings)
    decode_config = DecodeConfig(
        dead_letter_topic=topics.dead_letters,
        max_message_bytes=settings.max_message_bytes,
        time=time_config,
    )

    dead_letters = DeadLetters(
        topics.dead_letters,
        max_bytes=dead_letter_limit(settings.producer_config),
        now_ms=clock,
        on_dead=lambda reason: metrics.dead_letters.labels(reason).inc(),
    )

    skipped = quarantined(settings.state_dir, settings.quarantine_after)

    def decoder(source: str, topic: str, resume: WatermarkState) -> PartitionDecoder:
        partition = int(source.rpartition("#")[2])
        return PartitionDecoder(
            decode_config,
            source=source,
            kind=kinds[topic],
            resume=resume,
            dead_letters=dead_letters,
            wall_clock=clock,
            quarantined={
                offset: f"crashed step {e.step!r} {e.crashes} times ({e.error}); skipped"
                for (t, p, offset), e in skipped.items()
                if (t, p) == (topic, partition)
            },
        )

    source = (
        make_source(decoder)
        if make_source is not None
        else KafkaBatchSource(
            SourceConfig(
                brokers=settings.brokers,
                topics=list(kinds),
                batch_size=settings.source_batch_size,
                stop_at_eof=stop_at_eof,
                idle_timeout_ms=settings.idle_timeout_ms,
                startup_wait_s=settings.startup_wait_s,
                extra=settings.consumer_client_config(),
                stop=stop or threading.Event(),
                group_id=settings.consumer_group,
                progress=progress,
            ),
            decoder,
            lag=lambda topic, part, n: metrics.consumer_lag.labels(topic, str(part)).set(n),
        )
    )
    if on_poll is not None:
        source = PolledSource(source, on_poll)
    parts = source.list_parts()
    batches = op.input("in", flow := Dataflow("streamscore"), source)

    def count_in(batch: Any) -> None:
        n = len(batch.txns) + len(batch.chargebacks) + len(batch.dead)
        if n:
            metrics.events_in.labels(batch.source.rpartition("#")[0]).inc(n)

    shards = settings.shard_count(workers)
    windows_config = WindowsConfig(
        shards=shards,
        txn_sources=tuple(p for p in parts if p.rpartition("#")[0] == topics.transactions),
        cb_sources=tuple(p for p in parts if p.rpartition("#")[0] == topics.chargebacks),
        card=CardConfig(
            time=time_config,
            session_gap_ms=settings.session_gap_ms,
            cache_cards=-(-settings.card_cache // shards),
        ),
        merchant=MerchantConfig(
            time=time_config,
            aggregates_topic=topics.window_aggregates,
            cache_windows=-(-settings.merchant_cache // shards),
        ),
        undo_keep=settings.state_undo_epochs,
        versioned=settings.recovery_dir is not None,
        workers=workers,
    )
    routed, born_dead = windows(
        "windows",
        batches,
        config=windows_config,
        store=store,
        dead_letters=dead_letters,
        on_state_size=metrics.state_keys.set,
        on_input=count_in,
        on_chargebacks=metrics.chargebacks.inc,
        on_aggregates=metrics.window_aggregates.inc,
    )
    scoring = ScoringConfig(
        scores_topic=topics.scores,
        breaker=BreakerConfig(
            failure_threshold=settings.breaker_failures,
            slow_call_s=settings.inference_budget_ms / 1000,
            cooldown_s=settings.breaker_cooldown_s,
        ),
    )
    scorer = Scorer(scoring, models, monotonic=monotonic, metrics=metrics)
    score_step = ScoreStep(scoring, scorer, clock=clock, metrics=metrics)

    def after_windows(items: list[tuple[str, MerchantOutput]]) -> list[tuple[str, Any]]:
        """Score what the merchant shards emitted; pass their other outputs on.

        One step for all of it: score messages and drift samples, each
        shard's decisions, then its labels and watermark for quality and its
        messages for the sink, in that order (a label then finds the decision
        of a transaction scored in the same step).
        """
        to_score = [(shard, out.featured) for shard, out in items if isinstance(out, ToScore)]
        step = score_step(to_score)
        step.extend(item for item in items if not isinstance(item[1], ToScore))
        return step

    scored = op.flat_map_batch("score", routed, after_windows)
    # Each output by its type: a drift sample, a quality input, or messages for the sink.
    to_drift = op.branch("to-drift", scored, lambda kv: isinstance(kv[1], DriftSample))
    to_quality = op.branch(
        "to-quality", to_drift.falses, lambda kv: isinstance(kv[1], QUALITY_INPUTS)
    )
    messages: Stream[tuple[str, list[OutMessage]]] = to_quality.falses
    quality_in: Stream[tuple[str, QualityInput]] = to_quality.trues

    def drift_gauges(stats: list[DriftStat]) -> None:
        for s in stats:
            metrics.drift_psi.labels(s.signal).set(s.psi)
            metrics.drift_ks.labels(s.signal).set(s.ks)
            metrics.drift_detected.labels(s.signal).set(1 if s.drift else 0)
            metrics.drift_warming_up.labels(s.signal).set(1 if s.warming_up else 0)

    drift_out = drift(
        "drift",
        to_drift.trues,
        config=DriftConfig(
            topic=topics.drift,
            window_events=settings.drift_window_events,
            every_events=settings.drift_every_events,
            psi_threshold=settings.drift_psi_threshold,
        ),
        manifest=lambda: models.active.manifest,
        on_stats=drift_gauges,
    )

    def quality_gauges(record: QualityRecord) -> None:
        if record["decline_precision"] is not None:
            metrics.decline_precision.set(record["decline_precision"])
        if record["decline_recall"] is not None:
            metrics.decline_recall.set(record["decline_recall"])

    quality_out = quality(
        "quality",
        quality_in,
        config=QualityConfig(
            topic=topics.quality,
            window_ms=settings.quality_window_ms,
            label_horizon_ms=settings.label_horizon_ms,
        ),
        store=store,
        shards=windows_config.merchant_keys,
        on_record=quality_gauges,
        undo_keep=settings.state_undo_epochs,
        versioned=settings.recovery_dir is not None,
    )
    out = op.merge("outputs", born_dead, messages, drift_out, quality_out)
    if sink is None:
        sink_config = SinkConfig(brokers=settings.brokers, extra=settings.producer_client_config())
        writer = None
        if progress is not None:
            eos = ExactlyOnceConfig(
                brokers=settings.brokers,
                flow_name=settings.flow_name,
                process_id=process_id,
                extra=settings.producer_client_config(),
                client=settings.kafka_security(),
                startup_wait_s=settings.startup_wait_s,
            )
            writer = TransactionalWriter(
                eos, progress, PRODUCER_SETTINGS, on_client_error=log_client_error
            )
        sink = KafkaBatchSink(
            sink_config, ProducerPool(sink_config), process_id=process_id, transactions=writer
        )
    op.output("kafka-out", out, sink)
    return flow
