"""Fixtures for tests against the real local Kafka broker (scripts/kafka).

The broker is started once per session unless one already answers, and stopped
at the end only if this session started it. Every test gets throwaway topics,
deleted when the session ends: a developer's long-running broker would otherwise
gather six topics a test, every run.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.kafka_load import delete_topics
from flows.tooling import contract_topics, create_topics
from schemas.settings import Settings, TopicNames, load_settings
from tests.conftest import ROOT as ROOT


@pytest.fixture(scope="session")
def throwaway_topics(kafka_bootstrap: str) -> Iterator[list[str]]:
    """Topics the tests create on the session's broker: append a name, it is deleted at the end."""
    names: list[str] = []
    yield names
    delete_topics(kafka_bootstrap, names)


@pytest.fixture
def settings(kafka_bootstrap: str, tmp_path: Path, throwaway_topics: list[str]) -> Settings:
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
    throwaway_topics.extend(contract_topics(topics))
    create_topics(kafka_bootstrap, contract_topics(topics), result.topic_partitions)
    return result
