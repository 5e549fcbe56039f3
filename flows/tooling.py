"""Operator tooling on kafka-python: topic admin and synthetic replay into ``transactions``.

These run beside the service (demo, tests, benchmarks), so they use the
independent client, not the service's own confluent-kafka path.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

from models.simulator import SimConfig, SimEvent, simulate
from schemas.settings import TopicNames


def contract_topics(names: TopicNames) -> list[str]:
    """Every topic of the contract, in the contract's order."""
    return list(names.model_dump().values())


def create_topics(
    bootstrap: str,
    topics: Iterable[str],
    partitions: int,
    *,
    recreate: bool = False,
    security: Mapping[str, str] | None = None,
) -> None:
    """Create topics (deleting them first when ``recreate``); existing ones are kept.

    ``security``: kafka-python's security arguments (``Settings.kafka_python_security``).
    """
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="streamscore-admin", **(security or {})
    )
    try:
        wanted = list(dict.fromkeys(topics))
        if recreate:
            present = [t for t in wanted if t in set(admin.list_topics())]
            if present:
                with contextlib.suppress(UnknownTopicOrPartitionError):
                    admin.delete_topics(present, timeout_ms=30_000)
                _wait(lambda: not set(present) & set(admin.list_topics()), "topic deletion")
        for topic in wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(topic, partitions, 1)], timeout_ms=30_000)
        _wait(lambda: set(wanted) <= set(admin.list_topics()), "topic creation")
    finally:
        admin.close()


def _wait(done: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            msg = f"timed out waiting for {what}"
            raise TimeoutError(msg)
        time.sleep(0.2)


@dataclass(frozen=True, kw_only=True)
class ReplayConfig:
    """What to replay and how fast."""

    count: int
    sim: SimConfig = field(default_factory=SimConfig)
    invalid_share: float = 0.0
    chargebacks: bool = False
    rate_per_s: float = 0.0  # 0: as fast as the producer goes
    seed: int = 3


# Records that break the contract in each way the decoder must catch.
INVALID_SAMPLES: tuple[tuple[str, bytes], ...] = (
    ("json", b'{"event_id": "broken",'),
    ("json", b"\xff\xfe not utf-8"),
    (
        "schema",
        b'{"event_id": "x", "card_id": "c-1", "merchant_id": "m-1", "amount": -5,'
        b' "currency": "EUR", "event_time": "2026-11-23T10:00:00Z"}',
    ),
    (
        "schema",
        b'{"event_id": "x", "card_id": "c-1", "merchant_id": "m-1", "amount": 5,'
        b' "currency": "EUR", "event_time": "2026-11-23T10:00:00"}',
    ),
    (
        "schema",
        b'{"event_id": "", "card_id": "c-1", "merchant_id": "m-1", "amount": 5,'
        b' "currency": "eur", "event_time": 1795428000000}',
    ),
)


@dataclass(frozen=True)
class Outgoing:
    """A record to publish: key, value and, for invalid ones, the reason it must be rejected."""

    key: bytes | None
    value: bytes
    event_id: str | None
    expected_reason: str | None
    kind: Literal["transaction", "chargeback"] = "transaction"


def replay_records(config: ReplayConfig) -> Iterator[Outgoing]:
    """Simulated transactions (and, if asked, chargebacks), invalid ones mixed in."""
    rng = random.Random(config.seed)
    events: Iterator[SimEvent] = simulate(config.sim, config.count)
    for event in events:
        payload = json.dumps(event.payload, separators=(",", ":")).encode()
        if event.kind == "chargeback":
            if config.chargebacks:
                yield Outgoing(
                    event.key.encode(), payload, event.payload["event_id"], None, "chargeback"
                )
            continue
        if rng.random() < config.invalid_share:
            reason, value = INVALID_SAMPLES[rng.randrange(len(INVALID_SAMPLES))]
            yield Outgoing(event.key.encode(), value, None, reason)
        yield Outgoing(event.key.encode(), payload, event.payload["event_id"], None)


def publish(
    bootstrap: str,
    topics: TopicNames,
    records: Iterable[Outgoing],
    rate_per_s: float = 0,
    *,
    security: Mapping[str, str] | None = None,
) -> int:
    """Publish records to their topics with kafka-python, paced when ``rate_per_s`` > 0."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        batch_size=256 * 1024,
        **(security or {}),
    )
    sent = 0
    started = time.perf_counter()
    try:
        for rec in records:
            topic = topics.transactions if rec.kind == "transaction" else topics.chargebacks
            producer.send(topic, key=rec.key, value=rec.value)
            sent += 1
            if rate_per_s > 0:
                ahead = sent / rate_per_s - (time.perf_counter() - started)
                if ahead > 0.005:
                    time.sleep(ahead)
        producer.flush()
    finally:
        producer.close()
    return sent
