"""Training/serving parity: the live flow over the broker equals the in-process run, bit for bit.

The offline side is what training uses (``flows.testing.run_log``: the same
``build_flow`` over an in-memory log, with the same models); the live side is
the service reading the same log from Kafka. Transactions only, on one
partition, with increasing timestamps: the order of processing is then the
log's order on both sides.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from kafka import KafkaProducer

from flows.testing import ReplayRecord, run_log
from flows.tooling import contract_topics, create_topics
from models.simulator import SimConfig, simulate
from schemas.settings import Settings, TopicNames
from tests.integration.kafka_helpers import read_all, run_flow_to_end

pytestmark = pytest.mark.integration


def test_live_flow_equals_the_in_process_run_bit_for_bit(
    settings: Settings, throwaway_topics: list[str]
) -> None:
    suffix = uuid.uuid4().hex[:8]
    topics = TopicNames(**{k: f"{v}-p{suffix}" for k, v in TopicNames().model_dump().items()})
    throwaway_topics.extend(contract_topics(topics))
    create_topics(settings.bootstrap_servers, contract_topics(topics), 1)
    settings = settings.model_copy(update={"topics": topics})

    events = [e for e in simulate(SimConfig(seed=5, events_per_second=20), 3000)]
    txns = [e for e in events if e.kind == "transaction"]
    base = time.time_ns() // 1_000_000
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    records = []
    for offset, event in enumerate(txns):
        value = json.dumps(event.payload).encode()
        ts = base + offset
        producer.send(topics.transactions, key=event.key.encode(), value=value, timestamp_ms=ts)
        records.append(ReplayRecord("transaction", 0, offset, event.key.encode(), value, ts))
    producer.flush()
    producer.close()

    models, _metrics = run_flow_to_end(settings)
    live = {s["event_id"]: s for s in read_all(settings.bootstrap_servers, topics.scores)}

    offline = run_log(records, models=models, batch_size=500, flush=False)
    assert len(live) == len(offline.scores) == len(txns)
    mismatches = []
    for want in offline.scores:
        got = live[want["event_id"]]
        same = (
            got["features"] == want["features"]
            and got["score"] == want["score"]
            and got["decision"] == want["decision"]
            and got["late"] == want["late"]
        )
        if not same:
            mismatches.append(want["event_id"])
    assert mismatches == []
    assert sum(s["decision"] != "approve" for s in live.values()) > 0
