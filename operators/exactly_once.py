"""Exactly-once output: one Kafka transaction per epoch, fenced against replays.

Each process has one transactional producer, ``transactional.id``
``streamscore-<flow>-<process id>``. Its first ``init_transactions`` fences any
earlier producer of that id (a zombie of the same process index, or the
incarnation a crash left behind) and aborts the transaction it had open. A
transaction covers one bytewax epoch of the process's output -- scores,
window aggregates, drift, quality and dead letters -- and is committed at the
sink's snapshot, which bytewax calls at the epoch's end before the epoch can
count as done in the recovery store (``flows/recovery.py``). Into the same
transaction go the source offsets this process has read up to that epoch end
(``send_offsets_to_transaction``, to the consumer group
``streamscore-<flow>``) and a commit record on the compacted topic
``streamscore-<flow>-commits``, keyed by the process id.

Why a commit record: bytewax commits its recovery store after the sink's
snapshot, so a crash between the two replays an epoch whose output Kafka has
already committed. The commit record holds, per *origin*, the highest
*position* this process has committed (:class:`operators.messages.OutMessage`):
an input partition and the record's offset for scores and dead letters, a
merchant shard and the window's end for aggregates, the drift topic and its
emission count, the quality topic and the window's start. A replay recomputes
the same messages at the same positions (the state is rolled back to the
resume point, ``state/epochs.py``), and within an origin a position at or
below the committed one was part of a committed epoch: every epoch's output
lies within its own transaction, and an origin's positions never go back from
one epoch to the next. So on start the sink reads its last commit record (with
``read_committed``, after ``init_transactions`` has fenced every older
producer) and drops each message at or below it; nothing a replay emits
reaches a ``read_committed`` consumer twice. The epochs' input is not aligned
between a run and its replay (epochs are wall-clock intervals), which is why
the fence is by position and not by epoch number.

Errors: a retriable failure of a transaction call is retried; one that needs
an abort (a delivery that failed, the coordinator timed the transaction out
during a broker outage) aborts the transaction and sends the epoch's output
again in a new one, up to ``ATTEMPTS`` times; a fatal one (fenced by a newer
producer of the same id) stops the worker.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

from bytewax.outputs import StatefulSinkPartition
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from operators.messages import OutMessage, json_value

log = logging.getLogger(__name__)

# Tries of one epoch's transaction that end in an abortable error, before the worker stops.
ATTEMPTS = 5
RETRY_LOG_EVERY_S = 10.0
_T = TypeVar("_T")


def transactional_id(flow_name: str, process_id: int) -> str:
    """The stable transactional id of one process of a flow.

    >>> transactional_id("scoring", 1)
    'streamscore-scoring-1'
    """
    return f"streamscore-{flow_name}-{process_id}"


def commit_topic(flow_name: str) -> str:
    """The compacted topic of a flow's commit records.

    >>> commit_topic("scoring")
    'streamscore-scoring-commits'
    """
    return f"streamscore-{flow_name}-commits"


class Fences:
    """The highest committed position per origin, and what the open transaction adds.

    ``before`` is what was committed before this process started: a message
    at or below it for its origin is a replay of committed output.

    >>> f = Fences({"t#0": 10})
    >>> [f.admit(OutMessage("s", None, b"", "t#0", p)) for p in (9, 10, 11)]
    [False, False, True]
    >>> f.commit()["t#0"]
    11
    """

    def __init__(self, before: Mapping[str, int]) -> None:
        self._before = dict(before)
        self._committed = dict(before)
        self._pending: dict[str, int] = {}
        self.dropped = 0

    def admit(self, msg: OutMessage) -> bool:
        """Whether to produce ``msg``; a message kept raises its origin's pending position."""
        origin, position = msg.origin, msg.position
        if not origin:
            return True
        if position <= self._before.get(origin, -1):
            self.dropped += 1
            return False
        if position > self._pending.get(origin, -1):
            self._pending[origin] = position
        return True

    def marker(self) -> dict[str, int]:
        """Committed positions with the open transaction's included: its commit record."""
        merged = dict(self._committed)
        for origin, position in self._pending.items():
            if position > merged.get(origin, -1):
                merged[origin] = position
        return merged

    def commit(self) -> dict[str, int]:
        """The open transaction committed: its positions count as committed now."""
        self._committed = self.marker()
        self._pending.clear()
        return self._committed


class SourceProgress:
    """The next offset of each input partition read in this process, as of its epoch end.

    The source partitions record at their snapshots; the exactly-once sink
    commits what is recorded at its snapshot (bytewax snapshots a source
    partition's epoch before the sink's epoch can end, and lets no source run
    an epoch ahead of what the whole dataflow has finished).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next: dict[tuple[str, int], int] = {}

    def record(self, topic: str, partition: int, next_offset: int) -> None:
        """Note where a partition's epoch ended (negative: nothing read yet, ignored)."""
        if next_offset >= 0:
            with self._lock:
                self._next[(topic, partition)] = next_offset

    def offsets(self) -> dict[tuple[str, int], int]:
        """Every partition's recorded next offset."""
        with self._lock:
            return dict(self._next)


@dataclass(frozen=True, kw_only=True)
class ExactlyOnceConfig:
    """Who this process is and where its transactions go."""

    brokers: list[str]
    flow_name: str
    process_id: int = 0
    # Producer settings over the sink's defaults (``STREAMSCORE_PRODUCER_CONFIG``).
    extra: dict[str, str] = field(default_factory=dict)
    # What every other client needs to reach a secured cluster (security.protocol,
    # SASL and TLS settings): the commit topic's admin and consumers.
    client: dict[str, str] = field(default_factory=dict)
    # How long startup may wait for the broker (reading the commit record).
    startup_wait_s: float = 300.0

    @property
    def group(self) -> str:
        """The consumer group the source offsets are committed to."""
        return f"streamscore-{self.flow_name}"


class TransactionalWriter:
    """The process's transactional producer: an epoch of output per transaction."""

    def __init__(
        self,
        config: ExactlyOnceConfig,
        progress: SourceProgress,
        producer_settings: Mapping[str, Any],
        *,
        on_client_error: Callable[[KafkaError], None] = lambda _e: None,
    ) -> None:
        self._config = config
        self._progress = progress
        self._producer_settings = dict(producer_settings)
        self._on_client_error = on_client_error
        self._producer: Producer | None = None
        self._fences = Fences({})
        self._offsets: dict[str, int] = {}
        self._group_consumer: Consumer | None = None
        self._group_metadata: Any = None
        self._open = False
        self._epoch: list[OutMessage] = []
        self._failure: str | None = None
        self._fatal: KafkaError | None = None
        self._topic = commit_topic(config.flow_name)
        self._key = str(config.process_id).encode()

    def start(self) -> None:
        """Fence older producers of this id, then load what they committed (once)."""
        if self._producer is not None:
            return
        config = self._config
        producer = Producer(
            {
                "bootstrap.servers": ",".join(config.brokers),
                **self._producer_settings,
                "transactional.id": transactional_id(config.flow_name, config.process_id),
                "on_delivery": self._on_delivery,
                "delivery.report.only.error": True,
                "error_cb": self._on_error,
                **config.extra,
            }
        )
        self._retrying("init_transactions", lambda: producer.init_transactions(10.0))
        ensure_commit_topic(config.brokers, self._topic, client=config.client)
        record = read_commit_record(
            config.brokers,
            self._topic,
            self._key,
            timeout_s=config.startup_wait_s,
            client=config.client,
        )
        before = record.get("fences", {}) if record else {}
        self._offsets = dict(record.get("offsets", {})) if record else {}
        self._fences = Fences(before)
        self._group_consumer = Consumer(
            {
                **config.client,
                "bootstrap.servers": ",".join(config.brokers),
                "group.id": config.group,
                "enable.auto.commit": "false",
            }
        )
        self._group_metadata = self._group_consumer.consumer_group_metadata()
        self._producer = producer
        log.info(
            "exactly-once: transactional id %s ready; %d origin(s) committed before",
            transactional_id(config.flow_name, config.process_id),
            len(before),
        )

    @property
    def fences(self) -> Fences:
        """The committed positions this writer keeps (for tests and logs)."""
        return self._fences

    def write(self, values: list[list[OutMessage]]) -> None:
        """Hand messages to the open transaction (opened here), dropping committed replays."""
        producer = self._ready()
        if not self._open:
            self._retrying("begin_transaction", producer.begin_transaction)
            self._open = True
        admit = self._fences.admit
        kept = [m for batch in values for m in batch if admit(m)]
        self._epoch.extend(kept)
        self._produce(kept)
        producer.poll(0)

    def commit_epoch(self) -> None:
        """Commit the open transaction with its commit record and the source offsets."""
        if not self._open:
            return
        for attempt in range(1, ATTEMPTS + 1):
            try:
                self._commit()
                break
            except _AbortableError as exc:
                if attempt == ATTEMPTS:
                    delivery = f" (delivery: {self._failure})" if self._failure else ""
                    msg = f"the epoch's Kafka transaction failed {ATTEMPTS} times: {exc}{delivery}"
                    raise RuntimeError(msg) from None
                log.warning(
                    "exactly-once: the epoch's transaction must be aborted (%s); "
                    "sending its %d message(s) again in a new one",
                    exc,
                    len(self._epoch),
                )
                self._restart_transaction()
        self._fences.commit()
        if self._fences.dropped:
            log.info(
                "exactly-once: dropped %d re-emitted message(s) committed before this start",
                self._fences.dropped,
            )
            self._fences.dropped = 0
        self._epoch.clear()
        self._open = False

    def close(self) -> None:
        """Abort a transaction left open (its epoch never ended) and release the clients."""
        producer = self._producer
        if producer is None:
            return
        self._producer = None
        # Never raises: bytewax also closes while it unwinds from the error that stopped
        # the worker (a fenced producer), and a second error there would hide the first.
        try:
            if self._open:
                self._open = False
                producer.abort_transaction(30.0)
            producer.flush(10.0)
        except KafkaException as exc:
            log.warning("exactly-once: closing the producer: %s", exc.args[0].str())
        if self._group_consumer is not None:
            self._group_consumer.close()
            self._group_consumer = None

    # internals --------------------------------------------------------------------

    def _ready(self) -> Producer:
        if self._producer is None:
            self.start()
        assert self._producer is not None
        return self._producer

    def _produce(self, messages: list[OutMessage]) -> None:
        producer = self._ready()
        produce = producer.produce
        for m in messages:
            while True:
                try:
                    produce(m.topic, m.value, m.key)
                    break
                except BufferError:
                    producer.poll(0.05)
                except KafkaException as exc:
                    self._raise_fatal("produce", exc.args[0])

    def _commit(self) -> None:
        producer = self._ready()
        offsets = self._merged_offsets()
        record = {
            "process": self._config.process_id,
            "fences": self._fences.marker(),
            "offsets": offsets,
            "committed_at_ms": time.time_ns() // 1_000_000,
        }
        self._produce([OutMessage(self._topic, self._key, json_value(record))])
        positions = [
            TopicPartition(source.rpartition("#")[0], int(source.rpartition("#")[2]), offset)
            for source, offset in sorted(offsets.items())
        ]
        if positions:
            metadata = self._group_metadata
            self._retrying(
                "send_offsets_to_transaction",
                lambda: producer.send_offsets_to_transaction(positions, metadata, 30.0),
            )
        self._retrying("commit_transaction", lambda: producer.commit_transaction(30.0))
        self._offsets = offsets
        self._failure = None

    def _merged_offsets(self) -> dict[str, int]:
        """The recorded offsets, never behind what was committed before (a replay re-reads)."""
        merged = dict(self._offsets)
        for (topic, partition), offset in self._progress.offsets().items():
            source = f"{topic}#{partition}"
            if offset > merged.get(source, -1):
                merged[source] = offset
        return merged

    def _restart_transaction(self) -> None:
        producer = self._ready()
        self._retrying("abort_transaction", lambda: producer.abort_transaction(30.0))
        self._retrying("begin_transaction", producer.begin_transaction)
        self._produce(self._epoch)

    def _retrying(self, what: str, call: Callable[[], _T]) -> _T:
        """``call`` until it succeeds or fails for good; retriable errors are retried."""
        last_log = 0.0
        while True:
            try:
                return call()
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if err.fatal():
                    self._raise_fatal(what, err)
                if err.txn_requires_abort():
                    raise _AbortableError(f"{what}: {err.str()}") from None
                if not err.retriable():
                    self._raise_fatal(what, err)
                now = time.monotonic()
                if now - last_log >= RETRY_LOG_EVERY_S:
                    last_log = now
                    log.warning("exactly-once: %s: %s (retrying)", what, err.str())
                time.sleep(0.1)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal() and self._fatal is None:
            self._fatal = err  # what a later call reports only as "Fatal error"
        self._on_client_error(err)

    def _raise_fatal(self, what: str, err: KafkaError) -> NoReturn:
        if err.code() == KafkaError._FATAL:
            if self._fatal is None and self._producer is not None:
                try:  # serves the error callback that names the cause, or raises it
                    self._producer.poll(0)
                except KafkaException as exc:
                    self._fatal = exc.args[0]
            err = self._fatal or err
        hint = ""
        if err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED):
            hint = (
                ": another process started with the same transactional id (flow name and "
                "process id); this one is fenced and stops"
            )
        msg = f"exactly-once: {what} failed: {err.str()}{hint}"
        log.error("%s", msg)  # bytewax reports a worker's error only as it unwinds
        raise RuntimeError(msg)

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None and self._failure is None:
            self._failure = str(err)


class _AbortableError(Exception):
    """The open transaction failed and must be aborted; the epoch can be sent again."""


def ensure_commit_topic(
    brokers: list[str], topic: str, *, client: dict[str, str] | None = None
) -> None:
    """Create the compacted commit-record topic unless it exists."""
    admin = AdminClient({**(client or {}), "bootstrap.servers": ",".join(brokers)})
    meta = admin.list_topics(timeout=30)
    if topic in meta.topics and meta.topics[topic].error is None:
        return
    config = {"cleanup.policy": "compact", "segment.ms": "600000"}
    future = admin.create_topics([NewTopic(topic, 1, -1, config=config)])[topic]
    try:
        future.result(30)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise


def read_commit_record(
    brokers: list[str],
    topic: str,
    key: bytes,
    *,
    timeout_s: float,
    client: dict[str, str] | None = None,
) -> dict[str, Any] | None:
    """The last committed record under ``key`` (None: nothing committed yet).

    Reads the topic to its end with ``read_committed``: records of aborted or
    still open transactions are never seen.
    """
    consumer = Consumer(
        {
            **(client or {}),
            "bootstrap.servers": ",".join(brokers),
            "group.id": f"{topic}-reader",
            "enable.auto.commit": "false",
            "enable.partition.eof": "true",
            "isolation.level": "read_committed",
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=30).topics[topic]
        parts = sorted(meta.partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        pending = set(parts)
        last: bytes | None = None
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                msg = f"exactly-once: could not read {topic} to its end in {timeout_s:.0f} s"
                raise RuntimeError(msg)
            for msg in consumer.consume(1000, 0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition())
                    elif err.fatal():
                        raise KafkaException(err)
                    continue
                if msg.key() == key:
                    last = msg.value()
        return None if last is None else dict(json.loads(last))
    finally:
        consumer.close()


class TransactionalSinkPartition(StatefulSinkPartition[list[OutMessage], None]):
    """A sink partition over the process's :class:`TransactionalWriter`."""

    def __init__(self, writer: TransactionalWriter) -> None:
        self._writer = writer
        writer.start()

    def write_batch(self, values: list[list[OutMessage]]) -> None:
        self._writer.write(values)

    def snapshot(self) -> None:
        self._writer.commit_epoch()

    def close(self) -> None:
        self._writer.close()
