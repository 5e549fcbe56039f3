"""Kafka source and sink on confluent-kafka, built for batches.

Source: one bytewax partition per Kafka partition; each poll becomes *one*
dataflow item, so the engine's per-item cost is paid per batch. Records are
decoded and time-judged right here by the partition's
:class:`~operators.decode.PartitionDecoder`; the resume state is the next
offset together with the decoder's watermark state, snapshotted by bytewax at
epoch ends, so both rewind together. A partition with no records for the idle
timeout says so once (an idle batch), so it never stalls the watermark.
A partition that is not behind is polled every ``linger_ms`` on a wall-clock
grid shared by every partition, so at moderate load one step of the flow
carries all of their records; a poll that fills a batch polls again at once.
A partition at least ``backlog_batch_size`` records behind (as of its last
fetch) is polled for that many records at once: larger batches cost less a
record, and its records are waiting anyway.
Transient consumer errors (broker away) are logged and retried by
librdkafka; fatal ones stop the worker. Setting the ``stop`` event
(the entry point does on SIGINT/SIGTERM) ends every partition's input, so the
dataflow completes its last epoch, flushes and exits cleanly.

Progress: at each epoch end a partition commits its next offset to the
consumer group ``streamscore-<flow>`` (``SourceConfig.group_id``), so the
broker's own tooling shows the service's lag; the commit is for monitoring
only (recovery resumes from the bytewax snapshots). In exactly-once mode the
partition only records the offset (:class:`operators.exactly_once.SourceProgress`)
and the sink commits it inside the epoch's transaction.

Sink: one shared idempotent producer per process. ``write_batch`` only hands
messages to librdkafka (no flush per batch); ``snapshot`` -- called by bytewax
at every epoch end, before the epoch counts as done -- flushes, so an epoch is
never recorded as complete while its output sits in a buffer. A delivery error
fails the worker instead of dropping the message. With a
:class:`operators.exactly_once.TransactionalWriter` the sink writes each epoch
in one Kafka transaction instead (see that module).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from operators.decode import PartitionDecoder
from operators.exactly_once import SourceProgress, TransactionalSinkPartition, TransactionalWriter
from operators.messages import OutMessage, PartitionBatch, RawRecord
from operators.watermarks import WatermarkState
from schemas.errors import ConfigError

log = logging.getLogger(__name__)

_EOF = KafkaError._PARTITION_EOF


@dataclass(frozen=True, kw_only=True)
class SourceConfig:
    """What to read and how."""

    brokers: list[str]
    topics: list[str]
    batch_size: int = 1000
    # Records a poll takes from a partition at least this many records behind (its
    # last fetch's high watermark less its position); 0: always ``batch_size``.
    backlog_batch_size: int = 0
    # Poll a partition only every ``linger_ms`` (on a wall-clock grid, so a worker's
    # partitions wake together) unless its last poll filled a batch; 0: poll again at once.
    linger_ms: int = 0
    stop_at_eof: bool = False
    idle_timeout_ms: int = 10_000
    startup_wait_s: float = 300.0
    extra: dict[str, str] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    # The consumer group the offsets go to; with ``progress`` set (exactly-once) they are
    # recorded there for the sink's transaction instead of committed by the source.
    group_id: str = "streamscore-scoring"
    progress: SourceProgress | None = None


# (topic#partition, topic, resume state of the decoder) -> the partition's decoder
DecoderFactory = Callable[[str, str, WatermarkState], PartitionDecoder]
# (topic, partition, records not yet read) -> None; called about once a second
LagReporter = Callable[[str, int, int], None]
LAG_EVERY_S = 1.0
_Resume = tuple[int, WatermarkState]


class _MissingTopicError(Exception):
    """A configured topic is not on the broker (yet)."""


class KafkaBatchSource(FixedPartitionedSource[PartitionBatch, _Resume]):
    """Every partition of the configured topics, read and decoded in batches."""

    def __init__(
        self,
        config: SourceConfig,
        decoder: DecoderFactory,
        lag: LagReporter = lambda _t, _p, _n: None,
    ) -> None:
        self._config = config
        self._decoder = decoder
        self._lag = lag

    def list_parts(self) -> list[str]:
        """Each Kafka partition, as ``topic#partition``; waits for the broker and the topics.

        A broker that does not answer, or a topic not created yet, is retried
        with backoff for up to ``startup_wait_s``; then the error names the setting.
        """
        admin = AdminClient(
            {"bootstrap.servers": ",".join(self._config.brokers), **self._config.extra}
        )
        brokers = ",".join(self._config.brokers)
        deadline = time.monotonic() + self._config.startup_wait_s
        delay = 0.5
        while True:
            try:
                return self._parts(admin.list_topics(timeout=10))
            except KafkaException as exc:
                setting, problem = (
                    "STREAMSCORE_BOOTSTRAP_SERVERS",
                    f"Kafka at {brokers} did not answer ({exc})",
                )
            except _MissingTopicError as exc:
                setting, problem = (
                    "STREAMSCORE_TOPICS__*",
                    f"{exc} on {brokers} (create the topics with `streamscore topics`)",
                )
            if time.monotonic() + delay > deadline:
                wait = f"{self._config.startup_wait_s:.0f} s"
                raise ConfigError(setting, f"{problem}; gave up after {wait}") from None
            log.warning("waiting for Kafka: %s", problem)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)

    def _parts(self, cluster: Any) -> list[str]:
        parts: list[str] = []
        for topic in self._config.topics:
            meta = cluster.topics.get(topic)
            if meta is None or meta.error is not None:
                reason = "does not exist" if meta is None else meta.error.str()
                raise _MissingTopicError(f"topic {topic!r} {reason}")
            parts.extend(f"{topic}#{p}" for p in sorted(meta.partitions))
        return parts

    def build_part(
        self, step_id: str, for_part: str, resume_state: _Resume | None
    ) -> _SourcePartition:
        """Open a consumer on one partition, at the resume offset or the beginning."""
        topic, _, idx = for_part.rpartition("#")
        offset, decoder_state = resume_state if resume_state else (None, None)
        decoder = self._decoder(for_part, topic, decoder_state)
        return _SourcePartition(self._config, topic, int(idx), offset, decoder, self._lag)


class _SourcePartition(StatefulSourcePartition[PartitionBatch, _Resume]):
    def __init__(
        self,
        config: SourceConfig,
        topic: str,
        partition: int,
        resume: int | None,
        decoder: PartitionDecoder,
        lag: LagReporter,
    ) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": ",".join(config.brokers),
                # Recovery resumes from bytewax's snapshots; the group's offsets are
                # committed at epoch ends only for monitoring (lag in the broker's tools).
                "group.id": config.group_id,
                "enable.auto.commit": "false",
                "enable.auto.offset.store": "false",
                "enable.partition.eof": "true" if config.stop_at_eof else "false",
                "fetch.wait.max.ms": "10",
                "error_cb": log_client_error,
                "on_commit": _log_commit_error,
                **config.extra,
            }
        )
        self._next = OFFSET_BEGINNING if resume is None else resume
        self._consumer.assign([TopicPartition(topic, partition, self._next)])
        self._topic = topic
        self._partition = partition
        self._source = f"{topic}#{partition}"
        self._batch_size = config.batch_size
        self._backlog_batch_size = max(config.backlog_batch_size, config.batch_size)
        self._behind = False  # at least backlog_batch_size records behind, at the last poll
        self._tp = TopicPartition(topic, partition)
        self._linger_s = config.linger_ms / 1000
        self._full = False
        self._eof = False
        self._stop = config.stop
        self._last_error_log = 0.0
        self._decoder = decoder
        self._idle_after = config.idle_timeout_ms / 1000
        self._last_data = time.monotonic()
        self._idle = False
        self._lag = lag
        self._next_lag = 0.0
        self._progress = config.progress
        self._committed = self._next

    def next_batch(self) -> list[PartitionBatch]:
        if self._stop.is_set() or (self._eof and self._idle):
            raise StopIteration
        if self._eof:
            # A finished partition must not hold back the others' watermark.
            self._idle = True
            return [self._decoder.idle()]
        # Never block the worker: librdkafka prefetches in its own thread, and a
        # blocking poll on one empty partition (say, a quiet chargeback partition)
        # would hold up every other partition and operator of the worker.
        msgs = self._consumer.consume(
            self._backlog_batch_size if self._behind else self._batch_size, 0
        )
        self._full = len(msgs) >= self._batch_size
        batch: list[RawRecord] = []
        # The consumer is assigned this one partition: every message is of it.
        topic, partition, source = self._topic, self._partition, self._source
        for msg in msgs:
            err = msg.error()
            if err is not None:
                self._on_error(err)
                continue
            batch.append(
                RawRecord(
                    topic,
                    partition,
                    msg.offset(),
                    msg.key(),
                    msg.value(),
                    msg.timestamp()[1],
                    source,
                )
            )
        now = time.monotonic()
        if batch:
            self._next = batch[-1].offset + 1
        if self._backlog_batch_size > self._batch_size:
            behind = self._records_behind()
            self._behind = behind is not None and behind >= self._backlog_batch_size
        if now >= self._next_lag:
            self._report_lag(now)
        if batch:
            self._last_data = now
            self._idle = False
            return [self._decoder.decode(batch)]
        if not self._idle and now - self._last_data >= self._idle_after:
            self._idle = True
            return [self._decoder.idle()]
        return []

    def next_awake(self) -> datetime | None:
        """When to poll next.

        Without linger: at once after data, 1 ms after an empty poll, 5 ms once
        idle. With it: at once while polls fill batches (a backlog), otherwise at
        the next multiple of ``linger_ms`` on the wall clock, the same instant
        for every partition, so one activation of the flow carries them all.
        """
        if self._linger_s and not self._full:
            return next_tick(time.time(), self._linger_s)
        if self._idle:
            return datetime.now(UTC) + IDLE_POLL
        return None  # bytewax: immediately after a batch, a 1 ms cooldown after none

    def _records_behind(self) -> int | None:
        """Records not read yet, as of the last fetch; None before the first."""
        # cached=True: the high watermark from the last fetch response, no broker call.
        _low, high = self._consumer.get_watermark_offsets(self._tp, cached=True)
        return max(0, high - self._next) if high >= 0 and self._next >= 0 else None

    def _report_lag(self, now: float) -> None:
        self._next_lag = now + LAG_EVERY_S
        behind = self._records_behind()
        if behind is not None:
            self._lag(self._topic, self._partition, behind)
        else:
            self._next_lag = now  # nothing to report yet: try again on the next poll

    def _on_error(self, err: KafkaError) -> None:
        if err.code() == _EOF:
            self._eof = True
            return
        if err.fatal():
            msg = f"fatal Kafka error on {self._topic}#{self._partition}: {err}"
            raise RuntimeError(msg)
        now = time.monotonic()
        if now - self._last_error_log > 10:
            log.warning("Kafka consumer %s#%s: %s (retrying)", self._topic, self._partition, err)
            self._last_error_log = now

    def snapshot(self) -> _Resume:
        self._commit_progress()
        return (self._next, self._decoder.snapshot())

    def _commit_progress(self) -> None:
        """The epoch's end offset to the consumer group (or to the sink's transaction)."""
        if self._next < 0:
            return  # nothing read yet
        if self._progress is not None:
            self._progress.record(self._topic, self._partition, self._next)
        elif self._next != self._committed:
            self._committed = self._next
            self._consumer.commit(
                offsets=[TopicPartition(self._topic, self._partition, self._next)],
                asynchronous=True,
            )

    def close(self) -> None:
        self._consumer.close()


def next_tick(now_s: float, every_s: float) -> datetime:
    """The first multiple of ``every_s`` seconds since the epoch after ``now_s``.

    >>> next_tick(100.004, 0.005).timestamp()
    100.005
    >>> next_tick(100.005, 0.005).timestamp()
    100.01
    """
    ticks = int(now_s / every_s) + 1
    return datetime.fromtimestamp(round(ticks * every_s, 6), UTC)


@dataclass(frozen=True, kw_only=True)
class SinkConfig:
    """Where to produce and with which producer settings."""

    brokers: list[str]
    extra: dict[str, str] = field(default_factory=dict)


IDLE_POLL = timedelta(milliseconds=5)
_last_client_error = [0.0]
CLIENT_ERROR_LOG_EVERY_S = 10.0


def log_client_error(err: KafkaError) -> None:
    """librdkafka's client-level errors (broker down, all brokers down), at most every 10 s.

    The clients reconnect by themselves with exponential backoff
    (``reconnect.backoff.ms`` .. ``reconnect.backoff.max.ms``); undelivered output
    waits in the producer for ``message.timeout.ms`` (5 min by default) and the
    epoch does not end until it is acknowledged. Fatal errors stop the worker
    where the consumer or the sink sees them.
    """
    now = time.monotonic()
    if now - _last_client_error[0] >= CLIENT_ERROR_LOG_EVERY_S:
        _last_client_error[0] = now
        log.warning("Kafka: %s (reconnecting with backoff)", err)


def _log_commit_error(err: KafkaError | None, _partitions: list[TopicPartition]) -> None:
    """A failed progress commit (monitoring only: the next epoch's commit catches up)."""
    if err is not None:
        log_client_error(err)


# How the sink's producer batches and acknowledges (also what
# benchmarks/delivery_reports.py measures with); delivery reports are set in ProducerPool.
PRODUCER_SETTINGS: dict[str, str] = {
    "enable.idempotence": "true",
    "acks": "all",
    "linger.ms": "2",
    "queue.buffering.max.messages": "500000",
}


class ProducerPool:
    """One producer per process, shared by every sink partition built in it."""

    def __init__(self, config: SinkConfig) -> None:
        self._config = config
        self._producer: Producer | None = None
        self._failure: str | None = None

    def get(self) -> Producer:
        """The process's producer, created on first use."""
        if self._producer is None:
            self._producer = Producer(
                {
                    "bootstrap.servers": ",".join(self._config.brokers),
                    **PRODUCER_SETTINGS,
                    # Reports for failed deliveries only: a successful one is known
                    # from flush() returning 0, and a report per message costs the
                    # process CPU (benchmarks/delivery_reports.py). A failure still
                    # reaches on_delivery.
                    "on_delivery": self.on_delivery,
                    "delivery.report.only.error": True,
                    "error_cb": log_client_error,
                    **self._config.extra,
                }
            )
        return self._producer

    def on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        """Remember the first failed delivery; the next write or flush raises it."""
        if err is not None and self._failure is None:
            self._failure = str(err)

    def check(self) -> None:
        """Raise if any delivery failed: losing output silently is not an option."""
        if self._failure is not None:
            msg = f"Kafka delivery failed: {self._failure}"
            raise RuntimeError(msg)

    def flush(self) -> None:
        """Wait until everything handed to the producer is acknowledged."""
        if self._producer is not None:
            while self._producer.flush(5.0) > 0:
                log.warning("Kafka producer still waiting for acknowledgements")
        self.check()


class KafkaBatchSink(FixedPartitionedSink[list[OutMessage], None]):
    """Produce batches of messages, each to its own topic; flush at epoch ends.

    One sink partition per process, listed only by that process, and every
    item routed to the partition of the process it is in: output is produced
    where it was computed and never crosses processes (bytewax makes a
    partition's primary one of the workers that list it). The records' Kafka
    partitions come from their keys, not from this routing.
    """

    def __init__(
        self,
        config: SinkConfig,
        pool: ProducerPool,
        *,
        process_id: int = 0,
        transactions: TransactionalWriter | None = None,
    ) -> None:
        self._config = config
        self._pool = pool
        self._process_id = process_id
        self._transactions = transactions

    def list_parts(self) -> list[str]:
        """This process's partition; the cluster's sorted list is one per process id."""
        return [f"out-{self._process_id:05d}"]

    def part_fn(self, item_key: str) -> int:
        """The index of this process's partition in the cluster's sorted list: its id."""
        return self._process_id

    def build_part(
        self, step_id: str, for_part: str, resume_state: None
    ) -> StatefulSinkPartition[list[OutMessage], None]:
        """A writer over the process's shared producer (transactional in exactly-once mode)."""
        if self._transactions is not None:
            return TransactionalSinkPartition(self._transactions)
        return _SinkPartition(self._pool)


class _SinkPartition(StatefulSinkPartition[list[OutMessage], None]):
    def __init__(self, pool: ProducerPool) -> None:
        self._pool = pool
        self._producer = pool.get()

    def write_batch(self, values: list[list[OutMessage]]) -> None:
        self._pool.check()
        produce = self._producer.produce
        for batch in values:
            for m in batch:
                while True:
                    try:
                        produce(m.topic, m.value, m.key)
                        break
                    except BufferError:
                        self._producer.poll(0.05)
        self._producer.poll(0)

    def snapshot(self) -> None:
        self._pool.flush()

    def close(self) -> None:
        self._pool.flush()
