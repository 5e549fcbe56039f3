"""Fixtures for tests against the real local Kafka broker (scripts/kafka).

The broker is started once per session unless one already answers, and stopped
at the end only if this session started it. Every test gets throwaway topics.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from flows.tooling import contract_topics, create_topics
from schemas.settings import Settings, TopicNames, load_settings
from tests.conftest import ROOT as ROOT


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
