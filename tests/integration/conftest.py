"""Fixtures for tests against the real local Kafka broker (scripts/kafka).

The broker is started once per session unless one already answers, and stopped
at the end only if this session started it. Every test gets throwaway topics.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.tooling import contract_topics, create_topics
from schemas.settings import Settings, TopicNames, load_settings

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = os.environ.get("STREAMSCORE_TEST_BOOTSTRAP", "127.0.0.1:9092")


def _answers(bootstrap: str) -> bool:
    host, _, port = bootstrap.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """host:port of a running broker, started here when none answers."""
    started = False
    if not _answers(BOOTSTRAP):
        port = BOOTSTRAP.rpartition(":")[2]
        env = {**os.environ, "KAFKA_PORT": port}
        subprocess.run([str(ROOT / "scripts" / "kafka"), "start"], check=True, env=env)
        started = True
    yield BOOTSTRAP
    if started:
        subprocess.run([str(ROOT / "scripts" / "kafka"), "stop"], check=False)


@pytest.fixture
def settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """Settings over fresh, uniquely named topics (2 partitions each)."""
    suffix = uuid.uuid4().hex[:10]
    names = {k: f"{v}-{suffix}" for k, v in TopicNames().model_dump().items()}
    topics = TopicNames(**names)
    result = load_settings(
        bootstrap_servers=kafka_bootstrap,
        topics=topics,
        topic_partitions=2,
        state_dir=tmp_path / "state",
        metrics_port=0,
    )
    create_topics(kafka_bootstrap, contract_topics(topics), result.topic_partitions)
    return result
