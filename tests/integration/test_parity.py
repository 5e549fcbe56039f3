"""Training/serving parity: the live flow over the broker equals the offline replay, bit for bit.

The offline side is what training uses (``operators.replay``) plus the same
scoring operator; the live side is the dataflow reading the same log from
Kafka. Transactions only, on one partition, with increasing timestamps: the
order of processing is then the log's order on both sides.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from kafka import KafkaProducer

from flows.testing import ReplayRecord
from flows.tooling import contract_topics, create_topics
from models.simulator import SimConfig, simulate
from operators.replay import replay
from operators.scoring import Scorer, ScoringConfig
from schemas.settings import Settings, TopicNames
from tests.integration.kafka_helpers import read_all, run_flow_to_end

pytestmark = pytest.mark.integration


def test_live_flow_equals_offline_replay_bit_for_bit(
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

    models, metrics = run_flow_to_end(settings)
    live = {s["event_id"]: s for s in read_all(settings.bootstrap_servers, topics.scores)}

    offline = replay(records, batch_size=500, flush=False)
    scorer = Scorer(
        ScoringConfig(scores_topic=topics.scores), models, monotonic=time.monotonic, metrics=metrics
    )
    feats, outcomes = scorer.score(offline.featured)
    assert len(live) == len(offline.rows) == len(txns)
    mismatches = []
    for row, f, outcome in zip(offline.rows, feats, outcomes, strict=True):
        got = live[row.event_id]
        same = (
            got["features"] == f
            and got["score"] == outcome.score
            and got["decision"] == outcome.decision
            and got["late"] == row.late
        )
        if not same:
            mismatches.append(row.event_id)
    assert mismatches == []
    assert sum(s["decision"] != "approve" for s in live.values()) > 0
