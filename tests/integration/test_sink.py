"""The Kafka sink against the real broker: output is acknowledged at the epoch end, and a
delivery the broker refuses stops the worker instead of vanishing.

The producer asks librdkafka for reports of failed deliveries only, so these
tests are what shows that a failure still reaches the sink.
"""

from __future__ import annotations

import uuid

import pytest
from bytewax.outputs import StatefulSinkPartition
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from benchmarks.delivery_reports import MODES, cpu_us_per_message
from operators.kafka_io import KafkaBatchSink, ProducerPool, SinkConfig
from operators.messages import OutMessage
from tests.integration.kafka_helpers import read_all

pytestmark = pytest.mark.integration


def _topic(bootstrap: str, throwaway: list[str], **config: str) -> str:
    name = f"sink-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, 1, 1, config=config)])[name].result(30)
    throwaway.append(name)
    return name


def _offsets(bootstrap: str, topic: str) -> tuple[int, int]:
    """Low and high watermark of the topic's partition 0, asked of the broker now."""
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "sink-test"})
    try:
        low, high = probe.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        return low, high
    finally:
        probe.close()


def _sink_partition(
    bootstrap: str,
) -> tuple[ProducerPool, StatefulSinkPartition[list[OutMessage], None]]:
    config = SinkConfig(brokers=[bootstrap])
    pool = ProducerPool(config)
    sink = KafkaBatchSink(config, pool)
    return pool, sink.build_part("out", sink.list_parts()[0], None)


def test_snapshot_returns_once_every_message_is_on_the_broker(
    kafka_bootstrap: str, throwaway_topics: list[str]
) -> None:
    topic = _topic(kafka_bootstrap, throwaway_topics)
    pool, part = _sink_partition(kafka_bootstrap)
    batches = [
        [OutMessage(topic, f"k{i}".encode(), b'{"n": %d}' % (10 * b + i)) for i in range(10)]
        for b in range(3)
    ]
    part.write_batch(batches)
    part.snapshot()
    # Right after the epoch's flush: nothing waits in the producer, the log holds all 30.
    assert len(pool.get()) == 0
    assert _offsets(kafka_bootstrap, topic) == (0, 30)
    got = read_all(kafka_bootstrap, topic, expect=30, timeout_s=5)
    assert sorted(r["n"] for r in got) == list(range(30))


def test_a_refused_delivery_fails_the_epoch_and_the_next_write(
    kafka_bootstrap: str, throwaway_topics: list[str]
) -> None:
    # The broker refuses records over the topic's max.message.bytes (a permanent error).
    topic = _topic(kafka_bootstrap, throwaway_topics, **{"max.message.bytes": "1024"})
    _pool, part = _sink_partition(kafka_bootstrap)
    part.write_batch([[OutMessage(topic, b"k", b"x" * 100), OutMessage(topic, b"k", b"x" * 8000)]])
    with pytest.raises(RuntimeError, match="Kafka delivery failed"):
        part.snapshot()
    with pytest.raises(RuntimeError, match="Kafka delivery failed"):
        part.write_batch([[OutMessage(topic, b"k", b"ok")]])


def test_the_delivery_report_benchmark_delivers_every_message_in_both_modes(
    kafka_bootstrap: str, throwaway_topics: list[str]
) -> None:
    topic = _topic(kafka_bootstrap, throwaway_topics)
    for mode in MODES:
        assert cpu_us_per_message(kafka_bootstrap, topic, mode, 2_000) > 0
    assert _offsets(kafka_bootstrap, topic) == (0, 4_000)
