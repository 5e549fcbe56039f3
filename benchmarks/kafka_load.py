"""The benchmark's Kafka side on confluent-kafka: topics, a fast preload, end-offset counting.

Errors here are :class:`BenchError` (the benchmark's one error class, a
:class:`~schemas.errors.StreamScoreError` so the CLI reports it and exits 2).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from models.simulator import SimConfig, simulate
from schemas.errors import StreamScoreError

# The simulator's default pace of event time; N events span N / 200 seconds of it.
EVENT_TIME_RATE = 200.0


class BenchError(StreamScoreError):
    """The benchmark could not measure what it was asked to."""


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def check_broker(bootstrap: str, timeout_s: float = 10.0) -> None:
    """Raise :class:`BenchError` unless a broker answers at ``bootstrap``."""
    try:
        _admin(bootstrap).list_topics(timeout=timeout_s)
    except KafkaException as exc:
        msg = (
            f"no Kafka broker answers at {bootstrap} ({exc}); start one with `scripts/kafka start`"
        )
        raise BenchError(msg) from None


def create_topics(bootstrap: str, names: Iterable[str], partitions: int) -> None:
    """Create fresh topics with ``partitions`` partitions each; wait until they exist."""
    admin = _admin(bootstrap)
    wanted = list(dict.fromkeys(names))
    futures = admin.create_topics(
        [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in wanted],
        operation_timeout=30,
    )
    for name, future in futures.items():
        try:
            future.result(timeout=60)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BenchError(f"could not create topic {name}: {exc}") from None
    deadline = time.monotonic() + 30
    while not _led(admin, wanted, partitions):
        if time.monotonic() > deadline:
            raise BenchError(f"topics did not get partition leaders in 30 s: {wanted}")
        time.sleep(0.1)


def _led(admin: AdminClient, names: list[str], partitions: int) -> bool:
    """Every topic exists with all its partitions led (so offsets can be asked for)."""
    topics = admin.list_topics(timeout=10).topics
    for name in names:
        meta = topics.get(name)
        if meta is None or meta.error is not None or len(meta.partitions) < partitions:
            return False
        if any(p.leader < 0 or p.error is not None for p in meta.partitions.values()):
            return False
    return True


def delete_topics(bootstrap: str, names: Iterable[str]) -> None:
    """Delete topics, best effort (a benchmark's topics hold gigabytes)."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return
    admin = _admin(bootstrap)
    for future in admin.delete_topics(wanted, operation_timeout=30).values():
        # Already gone, or the broker is away: nothing more to do either way.
        with contextlib.suppress(KafkaException):
            future.result(timeout=60)


def transaction_payloads(sim: SimConfig, n: int) -> Iterable[tuple[bytes, bytes, int]]:
    """``(key, JSON value, event time ms)`` of the first ``n`` simulated transactions."""
    for event in simulate(sim, n):
        if event.kind == "transaction":
            value = json.dumps(event.payload, separators=(",", ":")).encode()
            yield event.key.encode(), value, event.event_time_ms


def distinct_card_payloads(
    sim: SimConfig, n: int, cards: int
) -> Iterable[tuple[bytes, bytes, int]]:
    """Like :func:`transaction_payloads`, but the i-th transaction's card is ``c-{i % cards}``.

    The first ``cards`` transactions each bring a card not seen before, so the
    pipeline's state holds ``min(n, cards)`` distinct cards: what the
    whole-pipeline RSS phase needs, without a simulator profile per card.

    >>> sim = SimConfig(seed=1, cards=10, start_ms=1_795_392_000_000)
    >>> [json.loads(v)["card_id"] for _k, v, _t in distinct_card_payloads(sim, 5, 3)]
    ['c-0', 'c-1', 'c-2', 'c-0', 'c-1']
    """
    i = 0
    for event in simulate(sim, n):
        if event.kind == "transaction":
            card = f"c-{i % cards}"
            payload = {**event.payload, "card_id": card}
            value = json.dumps(payload, separators=(",", ":")).encode()
            yield card.encode(), value, event.event_time_ms
            i += 1


def preload_sim(*, seed: int, cards: int, events: int, now_ms: int) -> SimConfig:
    """Simulated traffic whose event times end at ``now_ms`` (recent for the broker's retention)."""
    span_ms = round(events / EVENT_TIME_RATE * 1000)
    return SimConfig(
        seed=seed, cards=cards, events_per_second=EVENT_TIME_RATE, start_ms=now_ms - span_ms
    )


class _Deliveries:
    def __init__(self) -> None:
        self.failure: str | None = None

    def __call__(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None and self.failure is None:
            self.failure = str(err)


def preload(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes, bytes, int]],
    *,
    progress: Callable[[int], None] = lambda _n: None,
    every: int = 100_000,
) -> int:
    """Produce ``(key, value, timestamp ms)`` records as fast as the broker takes them."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": "true",
            "linger.ms": "20",
            "batch.size": "1000000",
            "queue.buffering.max.messages": "1000000",
            "queue.buffering.max.kbytes": "1048576",
        }
    )
    deliveries = _Deliveries()
    sent = 0
    for key, value, ts in records:
        while True:
            try:
                producer.produce(topic, value, key, timestamp=ts, on_delivery=deliveries)
                break
            except BufferError:
                producer.poll(0.05)
        sent += 1
        if sent % every == 0:
            producer.poll(0)
            progress(sent)
    while producer.flush(5.0) > 0:
        pass
    if deliveries.failure is not None:
        raise BenchError(f"preload into {topic} failed: {deliveries.failure}")
    return sent


class EndOffsets:
    """How many records a topic holds: the sum of its partitions' high watermarks.

    Exact for topics written without transactions (no control records), as
    the pipeline's idempotent producer writes them.
    """

    GIVE_UP_S = 30.0

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self._consumer = KafkaConsumer(
            {"bootstrap.servers": bootstrap, "group.id": "streamscore-bench-offsets"}
        )
        self._parts = [TopicPartition(topic, p) for p in range(partitions)]
        self._highs = [0] * partitions
        self._failing_since = 0.0

    def count(self) -> int:
        """Records on the topic now (one ListOffsets round trip per partition).

        A partition the broker cannot answer for this moment (leader moving,
        metadata not yet propagated) counts with its last known end offset.
        """
        for i, tp in enumerate(self._parts):
            try:
                _low, high = self._consumer.get_watermark_offsets(tp, timeout=5, cached=False)
            except KafkaException as exc:
                now = time.monotonic()
                self._failing_since = self._failing_since or now
                if now - self._failing_since > self.GIVE_UP_S:
                    msg = f"cannot read the end offsets of {tp.topic}: {exc}"
                    raise BenchError(msg) from None
                continue
            self._failing_since = 0.0
            self._highs[i] = max(self._highs[i], high)
        return sum(self._highs)

    def close(self) -> None:
        """Close the consumer."""
        self._consumer.close()


def consumer_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    """Settings of a group-less consumer that reads assigned partitions from the start."""
    return {
        "bootstrap.servers": bootstrap,
        "group.id": "streamscore-bench",
        "enable.auto.commit": "false",
        "auto.offset.reset": "earliest",
        **extra,
    }
