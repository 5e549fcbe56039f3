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
from flows.timer_slack import FineTimers
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
from operators.messages import OutMessage, PartitionBatch, ToScore
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
    state_kept: bool | None = None,
) -> Dataflow:
    """The StreamScore dataflow for ``settings``; nothing runs until bytewax executes it.

    ``store`` returns the process's state store (opened once, shared by its
    workers); ``models`` holds the serving models; ``process_id`` is this
    process's index in the cluster (its output is produced locally) and ``workers``
    the cluster's bytewax workers, over which the shards are spread evenly. Setting
    ``stop`` ends the input: the flow finishes its epoch and returns. ``make_source``
    (given the per-partition decoder factory) and ``sink`` replace the Kafka source
    and sink, for runs in this process over an in-memory log (:mod:`flows.testing`).
    ``state_kept`` says whether the store is read after the run, so the shards write
    their cached state back at the end of the input; None: with recovery only (the
    service's store without recovery is discarded at its next start).
    """
    parts = _Parts(settings, models=models, metrics=metrics, clock=clock)
    source = parts.source(make_source, stop_at_eof=stop_at_eof, stop=stop, on_poll=on_poll)
    windows_config = parts.windows_config(source.list_parts(), workers, state_kept)
    flow = Dataflow("streamscore")

    # transactions, chargebacks (Kafka) -> decode + per-partition watermarks
    batches = op.input("in", flow, source)
    # -> card shards -> merchant shards (RocksDB); dead letters leave where they are born
    merchant_out, dead_letters = windows(
        "windows",
        batches,
        config=windows_config,
        store=store,
        dead_letters=parts.dead_letters,
        on_state_size=metrics.state_keys.set,
        on_input=parts.count_in,
        on_chargebacks=metrics.chargebacks.inc,
        on_aggregates=metrics.window_aggregates.inc,
    )
    # -> score (ONNX, batched) -> scores; drift samples; decisions for quality
    scored = op.flat_map_batch("score", merchant_out, parts.score_step(monotonic))
    to_drift = op.branch("to-drift", scored, lambda kv: isinstance(kv[1], DriftSample))
    to_quality = op.branch(
        "to-quality", to_drift.falses, lambda kv: isinstance(kv[1], QUALITY_INPUTS)
    )
    messages: Stream[tuple[str, list[OutMessage]]] = to_quality.falses
    quality_in: Stream[tuple[str, QualityInput]] = to_quality.trues
    # -> drift (one monitor for the flow) -> drift
    drift_out = drift(
        "drift",
        to_drift.trues,
        config=parts.drift_config(),
        manifest=lambda: models.active.manifest,
        on_stats=parts.drift_gauges,
    )
    # -> quality (decisions joined with chargebacks per merchant shard, summed) -> quality
    quality_out = quality(
        "quality",
        quality_in,
        config=parts.quality_config(),
        store=store,
        shards=windows_config.merchant_keys,
        on_record=parts.quality_gauges,
        undo_keep=settings.state_undo_epochs,
        versioned=settings.recovery_dir is not None,
    )
    # -> Kafka: scores, window-aggregates, dead-letters, drift, quality
    out = op.merge("outputs", dead_letters, messages, drift_out, quality_out)
    op.output("kafka-out", out, sink or parts.kafka_sink(process_id))
    return flow


class _Parts:
    """What :func:`build_flow` wires, each built from the settings."""

    def __init__(
        self,
        settings: Settings,
        *,
        models: ModelRegistry,
        metrics: ServiceMetrics,
        clock: Callable[[], int],
    ) -> None:
        if settings.delivery == "exactly-once" and settings.recovery_dir is None:
            raise ConfigError(
                "STREAMSCORE_DELIVERY (--delivery)",
                "exactly-once needs crash recovery: set STREAMSCORE_RECOVERY_DIR (--recovery-dir)",
            )
        self.settings = settings
        self.models = models
        self.metrics = metrics
        self.clock = clock
        self.time = event_time_config(settings)
        # Exactly-once: the sources record their epoch-end offsets for the sink's transaction.
        self.progress = SourceProgress() if settings.delivery == "exactly-once" else None
        # Each signal's drift gauge children and the flags last set (drift_gauges).
        self._drift_gauges: dict[str, _SignalGauges] = {}
        self.dead_letters = DeadLetters(
            settings.topics.dead_letters,
            max_bytes=dead_letter_limit(settings.producer_config),
            now_ms=clock,
            on_dead=lambda reason: metrics.dead_letters.labels(reason).inc(),
        )

    def source(
        self,
        make_source: Callable[[DecoderFactory], FixedPartitionedSource[Any, Any]] | None,
        *,
        stop_at_eof: bool,
        stop: threading.Event | None,
        on_poll: Callable[[], None] | None,
    ) -> FixedPartitionedSource[Any, Any]:
        """The Kafka source of both input topics (or ``make_source``'s), decoding as it reads."""
        settings, metrics = self.settings, self.metrics
        topics = settings.topics
        kinds: dict[str, Kind] = {
            topics.transactions: "transaction",
            topics.chargebacks: "chargeback",
        }
        decode_config = DecodeConfig(
            dead_letter_topic=topics.dead_letters,
            max_message_bytes=settings.max_message_bytes,
            time=self.time,
        )
        skipped = quarantined(settings.state_dir, settings.quarantine_after)

        def decoder(source: str, topic: str, resume: WatermarkState) -> PartitionDecoder:
            partition = int(source.rpartition("#")[2])
            return PartitionDecoder(
                decode_config,
                source=source,
                kind=kinds[topic],
                resume=resume,
                dead_letters=self.dead_letters,
                wall_clock=self.clock,
                quarantined={
                    offset: f"crashed step {e.step!r} {e.crashes} times ({e.error}); skipped"
                    for (t, p, offset), e in skipped.items()
                    if (t, p) == (topic, partition)
                },
            )

        source: FixedPartitionedSource[Any, Any] = (
            make_source(decoder)
            if make_source is not None
            else KafkaBatchSource(
                SourceConfig(
                    brokers=settings.brokers,
                    topics=list(kinds),
                    batch_size=settings.source_batch_size,
                    backlog_batch_size=settings.backlog_batch_size(),
                    linger_ms=settings.source_linger_ms,
                    stop_at_eof=stop_at_eof,
                    idle_timeout_ms=settings.idle_timeout_ms,
                    startup_wait_s=settings.startup_wait_s,
                    extra=settings.consumer_client_config(),
                    stop=stop or threading.Event(),
                    group_id=settings.consumer_group,
                    progress=self.progress,
                ),
                decoder,
                lag=lambda topic, part, n: metrics.consumer_lag.labels(topic, str(part)).set(n),
            )
        )
        # Each worker thread sets its timer slack back as it lists the partitions
        # (a cluster's main thread runs with a coarse one: flows.timer_slack).
        return FineTimers(source if on_poll is None else PolledSource(source, on_poll))

    def count_in(self, batch: PartitionBatch) -> None:
        """Count a source batch's records, dead letters included, by input topic."""
        n = len(batch.txns) + len(batch.chargebacks) + len(batch.dead)
        if n:
            self.metrics.events_in.labels(batch.source.rpartition("#")[0]).inc(n)

    def windows_config(
        self, parts: list[str], workers: int, state_kept: bool | None = None
    ) -> WindowsConfig:
        """The card and merchant stages: shards, expected inputs, caches and state lifetime."""
        settings, topics = self.settings, self.settings.topics
        shards = settings.shard_count(workers)
        return WindowsConfig(
            shards=shards,
            txn_sources=tuple(p for p in parts if p.rpartition("#")[0] == topics.transactions),
            cb_sources=tuple(p for p in parts if p.rpartition("#")[0] == topics.chargebacks),
            card=CardConfig(
                time=self.time,
                session_gap_ms=settings.session_gap_ms,
                cache_cards=-(-settings.card_cache // shards),
            ),
            merchant=MerchantConfig(
                time=self.time,
                aggregates_topic=topics.window_aggregates,
                cache_windows=-(-settings.merchant_cache // shards),
            ),
            undo_keep=settings.state_undo_epochs,
            versioned=settings.recovery_dir is not None,
            write_back_at_eof=(
                settings.recovery_dir is not None if state_kept is None else state_kept
            ),
            workers=workers,
        )

    def score_step(
        self, monotonic: Callable[[], float]
    ) -> Callable[[list[tuple[str, MerchantOutput]]], list[tuple[str, Any]]]:
        """The score step's function over what the merchant shards emitted."""
        settings = self.settings
        scoring = ScoringConfig(
            scores_topic=settings.topics.scores,
            breaker=BreakerConfig(
                failure_threshold=settings.breaker_failures,
                slow_call_s=settings.inference_budget_ms / 1000,
                cooldown_s=settings.breaker_cooldown_s,
            ),
        )
        scorer = Scorer(scoring, self.models, monotonic=monotonic, metrics=self.metrics)
        step = ScoreStep(scoring, scorer, clock=self.clock, metrics=self.metrics)

        def after_windows(items: list[tuple[str, MerchantOutput]]) -> list[tuple[str, Any]]:
            """Score what the merchant shards emitted; pass their other outputs on.

            One step for all of it: score messages and drift samples, each
            shard's decisions, then its labels and watermark for quality and
            its messages for the sink, in that order (a label then finds the
            decision of a transaction scored in the same step).
            """
            to_score = [(shard, out.block) for shard, out in items if isinstance(out, ToScore)]
            out = step(to_score)
            out.extend(item for item in items if not isinstance(item[1], ToScore))
            return out

        return after_windows

    def drift_config(self) -> DriftConfig:
        """The drift monitor's window, cadence and threshold."""
        settings = self.settings
        return DriftConfig(
            topic=settings.topics.drift,
            window_events=settings.drift_window_events,
            every_events=settings.drift_every_events,
            psi_threshold=settings.drift_psi_threshold,
        )

    def drift_gauges(self, stats: list[DriftStat]) -> None:
        """Each signal's drift statistics to its gauges."""
        gauges = self._drift_gauges
        for s in stats:
            kept = gauges.get(s.signal)
            if kept is None:
                kept = gauges[s.signal] = _SignalGauges(self.metrics, s.signal)
            kept.set(s)

    def quality_config(self) -> QualityConfig:
        """The quality windows and the label horizon."""
        settings = self.settings
        return QualityConfig(
            topic=settings.topics.quality,
            window_ms=settings.quality_window_ms,
            label_horizon_ms=settings.label_horizon_ms,
        )

    def quality_gauges(self, record: QualityRecord) -> None:
        """A final quality window's precision and recall to their gauges."""
        if record["decline_precision"] is not None:
            self.metrics.decline_precision.set(record["decline_precision"])
        if record["decline_recall"] is not None:
            self.metrics.decline_recall.set(record["decline_recall"])

    def kafka_sink(self, process_id: int) -> KafkaBatchSink:
        """This process's producer for every output topic (transactional in exactly-once)."""
        settings = self.settings
        sink_config = SinkConfig(brokers=settings.brokers, extra=settings.producer_client_config())
        writer = None
        if self.progress is not None:
            eos = ExactlyOnceConfig(
                brokers=settings.brokers,
                flow_name=settings.flow_name,
                process_id=process_id,
                extra=settings.producer_client_config(),
                client=settings.kafka_security(),
                startup_wait_s=settings.startup_wait_s,
            )
            writer = TransactionalWriter(
                eos, self.progress, PRODUCER_SETTINGS, on_client_error=log_client_error
            )
        return KafkaBatchSink(
            sink_config, ProducerPool(sink_config), process_id=process_id, transactions=writer
        )


class _SignalGauges:
    """One signal's four drift gauge children and the flags last set on them.

    The children are looked up once (``labels()`` takes a lock and builds its key
    at every call). An emission sets PSI and KS of every signal, a flag only when
    it changed (each set takes a lock).
    """

    __slots__ = ("_detected", "_ks", "_psi", "_warming_up", "drift", "warming_up")

    def __init__(self, metrics: ServiceMetrics, signal: str) -> None:
        self._psi = metrics.drift_psi.labels(signal)
        self._ks = metrics.drift_ks.labels(signal)
        self._detected = metrics.drift_detected.labels(signal)
        self._warming_up = metrics.drift_warming_up.labels(signal)
        self.drift: bool | None = None
        self.warming_up: bool | None = None

    def set(self, stat: DriftStat) -> None:
        """The gauges to ``stat``'s figures and flags."""
        self._psi.set(stat.psi)
        self._ks.set(stat.ks)
        if stat.drift is not self.drift:
            self._detected.set(1 if stat.drift else 0)
            self.drift = stat.drift
        if stat.warming_up is not self.warming_up:
            self._warming_up.set(1 if stat.warming_up else 0)
            self.warming_up = stat.warming_up
