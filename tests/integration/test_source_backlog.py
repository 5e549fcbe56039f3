"""The Kafka source on the real broker: a partition far behind is read in backlog batches."""

from __future__ import annotations

import json
import time

from kafka import KafkaProducer

from operators.decode import DeadLetters, DecodeConfig, PartitionDecoder
from operators.kafka_io import SourceConfig, _SourcePartition
from schemas.settings import Settings

RECORDS = 3_000


def _transaction(i: int) -> bytes:
    return json.dumps(
        {
            "event_id": f"tx-{i}",
            "card_id": f"c-{i % 7}",
            "merchant_id": "m-1",
            "amount": 1.0,
            "currency": "EUR",
            "event_time": 1_795_428_000_000 + i,
        }
    ).encode()


def test_a_backlog_is_read_in_backlog_batches_then_in_batches(settings: Settings) -> None:
    topic = settings.topics.transactions
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    for i in range(RECORDS):
        producer.send(topic, value=_transaction(i), partition=0)
    producer.flush()
    producer.close()

    decoder = PartitionDecoder(
        DecodeConfig(dead_letter_topic=settings.topics.dead_letters, max_message_bytes=4096),
        source=f"{topic}#0",
        kind="transaction",
        resume=None,
        dead_letters=DeadLetters(settings.topics.dead_letters),
        wall_clock=None,
    )
    config = SourceConfig(
        brokers=[settings.bootstrap_servers],
        topics=[topic],
        batch_size=100,
        backlog_batch_size=1_000,
        startup_wait_s=30,
    )
    part = _SourcePartition(config, topic, 0, None, decoder, lambda _t, _p, _n: None)
    sizes: list[int] = []
    event_ids: list[str] = []
    deadline = time.monotonic() + 60
    try:
        while len(event_ids) < RECORDS and time.monotonic() < deadline:
            batches = part.next_batch()
            if not batches or not batches[0].txns:
                time.sleep(0.01)  # the fetch is still on its way
                continue
            sizes.append(len(batches[0].txns))
            event_ids += batches[0].txns.event_id
    finally:
        part.close()
    assert event_ids == [f"tx-{i}" for i in range(RECORDS)]  # every record once, in order
    # Polled up to 1,000 at a time while 1,000 or more waited (what librdkafka had
    # fetched by then), never more.
    assert 100 < max(sizes) <= 1_000
    assert sizes[-1] <= 100  # and in batches again once fewer did
