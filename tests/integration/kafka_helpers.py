"""Independent verification through kafka-python: publish inputs, read every output."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition


def produce(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]
) -> list[tuple[int, int]]:
    """Publish (key, value) pairs; return each one's (partition, offset) in order."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        futures = [producer.send(topic, key=k, value=v) for k, v in records]
        producer.flush()
        return [(md.partition, md.offset) for md in (f.get(timeout=30) for f in futures)]
    finally:
        producer.close()


def read_all(
    bootstrap: str, topic: str, *, expect: int | None = None, timeout_s: float = 30
) -> list[Any]:
    """Every record of ``topic`` as parsed JSON (key included under ``_key``).

    Reads to the end offsets; with ``expect``, keeps polling until that many
    arrived or the timeout passes (then returns what there is).
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            end = consumer.end_offsets(parts)
            for batch in consumer.poll(timeout_ms=200).values():
                for m in batch:
                    value = json.loads(m.value)
                    value["_key"] = None if m.key is None else m.key.decode()
                    out.append(value)
            at_end = all(consumer.position(p) >= end[p] for p in parts)
            if at_end and (expect is None or len(out) >= expect):
                break
        return out
    finally:
        consumer.close()
